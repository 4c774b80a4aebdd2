#!/usr/bin/env python3
"""imagegen-tokenize against transformers' CLIPTokenizer (clip_tokens_public.json).

Usage: clip_tokenize_tool_test.py IMAGEGEN_TOKENIZE SD_REFERENCE_DIR

Feeds every reference prompt, one JSON string a line, to the tool on the tokenizer folder whose
pad token the case names (sd1-tiny: vocab.json + merges.txt, pad <|endoftext|>; sd2-tiny:
tokenizer.json, pad "!") and compares each output line with the reference ids. Also checks that
a line that is not a JSON string stops the tool with exit status 2 and a message naming the line.
"""
import json
import os
import subprocess
import sys

FOLDERS = {"<|endoftext|>": "sd1-tiny", "!": "sd2-tiny"}


def run_tool(tool, folder, stdin):
    return subprocess.run([tool, "--tokenizer_dir", folder, "--max_length", "77", "--type", "clip_bpe"],
                          input=stdin, capture_output=True, text=True, timeout=60)


def main():
    tool, ref_dir = sys.argv[1], sys.argv[2]
    with open(os.path.join(ref_dir, "clip_tokens_public.json"), encoding="utf-8") as f:
        cases = json.load(f)
    passed = failed = 0
    for pad, name in FOLDERS.items():
        folder = os.path.join(ref_dir, name, "tokenizer")
        mine = [c for c in cases if c["pad_token"] == pad]
        result = run_tool(tool, folder, "".join(json.dumps(c["text"]) + "\n" for c in mine))
        lines = result.stdout.splitlines()
        if result.returncode != 0 or len(lines) != len(mine):
            print(f"FAIL {name}: exit {result.returncode}, {len(lines)} lines for {len(mine)} prompts\n{result.stderr}")
            failed += len(mine)
            continue
        for case, line in zip(mine, lines):
            got = json.loads(line)
            if got == case["input_ids"]:
                passed += 1
            else:
                failed += 1
                print(f"FAIL {name} {case['text']!r}:\n  got      {got}\n  expected {case['input_ids']}")

    # A line that is not a JSON string: exit 2, naming the line; the lines before it are answered.
    folder = os.path.join(ref_dir, "sd1-tiny", "tokenizer")
    result = run_tool(tool, folder, '"a photo of a cat"\n"a dog"\nnot json\n"never read"\n')
    if result.returncode == 2 and "line 3" in result.stderr and len(result.stdout.splitlines()) == 2:
        passed += 1
    else:
        failed += 1
        print(f"FAIL bad input line: exit {result.returncode}, stderr {result.stderr!r}, stdout {result.stdout!r}")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
