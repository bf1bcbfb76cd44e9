# Python SDK worker image for the TSC orchestrator's Beam stages on Flink: it runs as the
# worker-pool sidecar of every TaskManager (deploy/flinkdeployment.yaml, deploy/README.md).
#
# The tag is the apache-beam pin of requirements.txt and setup.py (tests/test_deployment_files.py
# checks it): the submitting SDK, this harness and the Flink job server must be one Beam release,
# or the portable runner refuses the job or fails on mismatched coders at run time.
FROM apache/beam_python3.11_sdk:2.73.0

# Set by CI (--build-arg VCS_REF=$(git rev-parse HEAD)) so a running image points at its commit.
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="tsc-orchestrator-beam-worker" \
      org.opencontainers.image.description="Beam Python SDK worker pool for the TSC orchestrator pipeline on Flink" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.base.name="docker.io/apache/beam_python3.11_sdk:2.73.0"

WORKDIR /opt/tsc-orchestrator

# Only what the workers import: tests/, testing/ and bench/ stay out (also via .dockerignore), so
# test servers and benchmark code can never be unpickled into, or shadow, production modules.
COPY requirements.txt setup.py run_pipeline.py ./
COPY pipeline/ pipeline/
COPY transforms/ transforms/

# Installing the package (setup.py install_requires = the runtime dependencies only) with
# requirements.txt as a *constraints* file gives the runtime set at requirements.txt's exact pins
# without installing pytest/ruff/kubernetes-validate, and without a second hand-kept list that
# could drift; if setup.py and requirements.txt ever disagree on a pin, the resolver fails the
# build instead of silently picking one. apache-beam==2.73.0 is already satisfied by the base
# image, so pip leaves its SDK alone; the final assertion proves it (a changed Beam here would no
# longer match the base image's boot binary). pip check fails the build on any broken dependency.
# build/ and *.egg-info are pip's in-tree build leftovers, of no use at run time.
RUN pip install --no-cache-dir --disable-pip-version-check -c requirements.txt . \
 && pip check \
 && python -c "import apache_beam as b; assert b.__version__ == '2.73.0', b.__version__" \
 && rm -rf build ./*.egg-info

# Non-root: the worker pool needs no privileges. The boot binary creates a per-worker venv under
# /opt/apache/beam-venv (unless RUN_PYTHON_SDK_IN_DEFAULT_ENVIRONMENT is set); giving that one
# directory to the user keeps that default working, including pip-installing anything a job
# stages, without making the system site-packages writable. A numeric UID lets Kubernetes
# enforce runAsNonRoot.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/beam \
        --shell /usr/sbin/nologin beam \
 && install -d -o 10001 -g 10001 -m 0750 /opt/apache/beam-venv
USER 10001:10001

# The Fn API worker pool listens here when started with --worker_pool; the Flink TaskManager
# reaches it on localhost (--environment_type=EXTERNAL --environment_config=localhost:50000).
EXPOSE 50000

# No ENTRYPOINT/CMD here on purpose: the base image's /opt/apache/beam/boot is the Beam container
# contract (worker pool with --worker_pool, a single SDK harness with --id/--*_endpoint flags).
