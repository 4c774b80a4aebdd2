# imagegen: build stage and slim runtime stage.
#
# Both stages install packages with scripts/setup.sh and the build stage builds with
# scripts/build.sh, the same scripts the README's commands and CI run, so they cannot drift.
# tests/check_runtime_deps.sh (in CI) checks that the runtime list covers every linked library.
#
#   docker build -t imagegen .
#   docker run -p 50051:50051 -p 9090:9090 imagegen

FROM debian:12 AS build
WORKDIR /src
COPY scripts/setup.sh scripts/setup.sh
RUN scripts/setup.sh build
COPY . .
RUN IMAGEGEN_BUILD_DIR=/src/build scripts/build.sh -DCMAKE_INSTALL_PREFIX=/opt/imagegen \
      -DIMAGEGEN_BUILD_TESTS=OFF -DIMAGEGEN_DEFAULT_MODEL_DIR=/opt/imagegen/models \
 && cmake --install /src/build

FROM debian:12-slim AS runtime
COPY scripts/setup.sh /tmp/setup.sh
RUN /tmp/setup.sh runtime && rm -rf /var/lib/apt/lists/* /tmp/setup.sh
COPY --from=build /opt/imagegen/bin /opt/imagegen/bin
COPY models/fashion-mnist-ldm /opt/imagegen/models/fashion-mnist-ldm
RUN useradd --system --no-create-home imagegen
USER imagegen
EXPOSE 50051 9090
ENTRYPOINT ["/opt/imagegen/bin/imagegen-server", "--model_dir=/opt/imagegen/models"]
