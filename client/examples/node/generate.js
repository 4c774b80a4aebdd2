#!/usr/bin/env node
// A minimal Node.js client of the imagegen API, for client authors.
//
// It does three things and exits non-zero if any of them fails:
//   1. checks that grpc.health.v1.Health/Check("") answers SERVING;
//   2. streams a Generate with a preview every 5 steps, saving the previews and the final PNG
//      into --out_dir and printing the progress;
//   3. starts a second Generate with steps=200 and cancels it from the client after the first
//      progress event, then shows that the call ended CANCELLED.
//
//   npm ci && node generate.js --server 127.0.0.1:50051 --prompt "a pair of trousers" --out_dir out
'use strict';

const fs = require('fs');
const path = require('path');
const { parseArgs } = require('util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

function loadApi() {
  const api = protoLoader.loadSync('imagegen/v1/imagegen.proto',
    { ...LOADER_OPTIONS, includeDirs: [path.join(REPO_ROOT, 'proto')] });
  const health = protoLoader.loadSync(path.join(REPO_ROOT, 'tests', 'e2e', 'health.proto'),
    LOADER_OPTIONS);
  return {
    imagegen: grpc.loadPackageDefinition(api).imagegen.v1,
    health: grpc.loadPackageDefinition(health).grpc.health.v1,
  };
}

function deadline(seconds) {
  return new Date(Date.now() + seconds * 1000);
}

function checkHealth(healthClient) {
  return new Promise((resolve, reject) => {
    healthClient.Check({ service: '' }, { deadline: deadline(10) }, (err, reply) => {
      if (err) return reject(err);
      console.log(`health: ${reply.status}`);
      resolve(reply.status === 'SERVING');
    });
  });
}

// Streams one job with previews every 5 steps; resolves true when a result arrived.
function generate(client, prompt, outDir) {
  const request = {
    prompt, steps: 20, seed: 42,
    preview: { every_n_steps: 5, method: 'PREVIEW_METHOD_LATENT_APPROX' },
  };
  return new Promise((resolve, reject) => {
    let gotResult = false;
    const call = client.Generate(request, { deadline: deadline(300) });
    call.on('data', (event) => {
      if (event.event === 'accepted') {
        const a = event.accepted;
        console.log(`generate: accepted job ${a.job_id} (queue position ${a.queue_position})`);
      } else if (event.event === 'progress') {
        const p = event.progress;
        if (p.step === 0) {
          console.log(`generate: queued, ${p.queue_position} job(s) ahead`);
          return;
        }
        console.log(`generate: step ${p.step}/${p.total_steps}`);
        for (const image of p.previews) {
          const file = path.join(outDir,
            `preview-step${String(p.step).padStart(3, '0')}-${image.index}.png`);
          fs.writeFileSync(file, image.data);
          console.log(`generate:   preview ${file}`);
        }
      } else if (event.event === 'result') {
        const r = event.result;
        for (const image of r.images) {
          const file = path.join(outDir, `result-${image.seed}.png`);
          fs.writeFileSync(file, image.data);
          console.log(`generate: result ${file} (${image.width}x${image.height}, seed ${image.seed})`);
        }
        console.log(`generate: ${r.model}, ${r.sampler}, ${r.steps} steps, ` +
          `${r.timings.total_seconds.toFixed(2)} s`);
        gotResult = r.images.length > 0;
      }
    });
    call.on('error', reject);
    call.on('end', () => resolve(gotResult));
  });
}

// Starts a 200-step job and cancels the call after the first progress event.
function generateAndCancel(client, prompt) {
  return new Promise((resolve) => {
    const call = client.Generate({ prompt, steps: 200 }, { deadline: deadline(300) });
    let cancelled = false;
    let ended = false;  // grpc-js may emit 'end' after 'error'; report only the first
    call.on('data', (event) => {
      if (!cancelled && event.event === 'progress' && event.progress.step > 0) {
        console.log(`cancel: at step ${event.progress.step}/${event.progress.total_steps}, ` +
          'cancelling the call');
        cancelled = true;
        call.cancel();
      }
    });
    call.on('error', (err) => {
      if (ended) return;
      ended = true;
      const name = Object.keys(grpc.status).find((k) => grpc.status[k] === err.code);
      console.log(`cancel: the call ended ${name}`);
      resolve(err.code === grpc.status.CANCELLED);
    });
    call.on('end', () => {
      if (ended) return;
      ended = true;
      console.log('cancel: the call finished without being cancelled');
      resolve(false);
    });
  });
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      server: { type: 'string', default: '127.0.0.1:50051' },
      prompt: { type: 'string', default: 'a pair of trousers' },
      out_dir: { type: 'string', default: 'out' },
    },
  });
  fs.mkdirSync(args.out_dir, { recursive: true });

  const { imagegen, health } = loadApi();
  const options = { 'grpc.max_receive_message_length': 256 << 20 };  // results carry whole images
  const credentials = grpc.credentials.createInsecure();
  const client = new imagegen.ImageGenerator(args.server, credentials, options);
  const healthClient = new health.Health(args.server, credentials, options);

  const steps = [
    ['health', () => checkHealth(healthClient)],
    ['generate', () => generate(client, args.prompt, args.out_dir)],
    ['cancel', () => generateAndCancel(client, args.prompt)],
  ];
  const failed = [];
  for (const [name, step] of steps) {
    try {
      if (!(await step())) failed.push(name);
    } catch (err) {
      console.log(`${name}: failed: ${err.message}`);
      failed.push(name);
    }
  }
  client.close();
  healthClient.close();
  console.log(failed.length ? `FAILED: ${failed.join(', ')}` : 'all three steps passed');
  process.exitCode = failed.length ? 1 : 0;
}

main();
