"""Consistency of the deployment files (Dockerfile, .dockerignore, deploy/) with the code.

Nothing here can be built or applied on this machine (no Docker engine, no cluster), so these
checks are what keeps the image and the manifests in step with the pinned versions and flags.
"""

from __future__ import annotations

import fnmatch
import pathlib
import re

import kubernetes_validate
import yaml

from transforms.impala_writer import load_impala_clusters

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / 'deploy'
DOCKERFILE = ROOT / 'Dockerfile'
DOCKERIGNORE = ROOT / '.dockerignore'
KUBERNETES_VERSION = '1.33'

WORKER_POOL_PORT = 50000
RUNTIME_PATHS = {'requirements.txt', 'setup.py', 'run_pipeline.py', 'pipeline', 'transforms'}
NOT_IN_IMAGE = {'tests', 'testing', 'bench', '.venv', '.stack', 'out', '.git'}

# Read by the pipeline, but not as a flag's fallback in pipeline/options.py: where instead.
READ_OUTSIDE_OPTIONS = {
    'IMPALA_PASSWORD_FILE': 'transforms/impala_writer.py',
    'KAFKA_SECURITY_PROTOCOL': 'pipeline/graph.py',
    'KAFKA_SASL_MECHANISM': 'pipeline/graph.py',
    'KAFKA_SASL_USERNAME': 'pipeline/graph.py',
    'KAFKA_SASL_PASSWORD_FILE': 'pipeline/graph.py',
}
REQUIRED_ENV = {
    'ORCHESTRATOR_TOPIC', 'JOB_ORCHESTRATOR_TOPIC', 'DEAD_LETTER_TOPIC',
    'KAFKA_BOOTSTRAP_SERVERS', 'CONSUMER_GROUP', 'TSC_CONFIG_URL', 'JOB_IMAGE', 'JOB_NAMESPACE',
    'IMPALA_PASSWORD_FILE', 'TSC_CONFIG_TOKEN_FILE', 'KAFKA_SASL_PASSWORD_FILE',
}

SECRET_KEY = re.compile(r'(password|passwd|pwd|token|secret|jwt|api_?key|credentials?)$',
                        re.IGNORECASE)
SECRET_ENV = re.compile(r'(PASSWORD|PASSWD|TOKEN|SECRET|JWT|API_?KEY|CREDENTIALS?)$')
PASSWORD_IN_URL = re.compile(r'://[^/@\s:]+:[^/@\s]+@')
INLINE_JAAS_PASSWORD = re.compile(r'password\s*=\s*"(?!\$\{)', re.IGNORECASE)


def _beam_pin_requirements() -> str:
    pins = re.findall(r'^apache-beam==(\S+)\s*$',
                      (ROOT / 'requirements.txt').read_text(encoding='utf-8'), re.MULTILINE)
    assert len(pins) == 1, pins
    return pins[0]


def _dockerfile() -> str:
    return DOCKERFILE.read_text(encoding='utf-8')


def _yaml_files() -> list[pathlib.Path]:
    return sorted([*DEPLOY.glob('*.yaml'), *DEPLOY.glob('*.yml')])


def _documents(path: pathlib.Path) -> list:
    with path.open(encoding='utf-8') as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def _all_documents() -> list[tuple[pathlib.Path, dict]]:
    return [(path, doc) for path in _yaml_files() for doc in _documents(path)]


def _flink_deployment() -> dict:
    docs = [doc for _, doc in _all_documents() if doc.get('kind') == 'FlinkDeployment']
    assert len(docs) == 1, 'expected exactly one FlinkDeployment under deploy/'
    return docs[0]


def _pod_specs(deployment: dict) -> dict[str, dict]:
    spec = deployment['spec']
    specs = {'podTemplate': spec.get('podTemplate', {}).get('spec', {})}
    for role in ('jobManager', 'taskManager'):
        specs[role] = spec.get(role, {}).get('podTemplate', {}).get('spec', {})
    return specs


def _containers(deployment: dict):
    for role, pod in _pod_specs(deployment).items():
        for container in [*pod.get('initContainers', []), *pod.get('containers', [])]:
            yield role, pod, container


def _worker_pool(deployment: dict) -> tuple[dict, dict]:
    pool = [(pod, c) for role, pod, c in _containers(deployment)
            if role == 'taskManager' and '--worker_pool' in c.get('args', [])]
    assert len(pool) == 1, 'expected one --worker_pool sidecar in the TaskManager pod template'
    return pool[0]


def _env_names(deployment: dict) -> set[str]:
    return {entry['name'] for _, _, c in _containers(deployment) for entry in c.get('env', [])}


def _walk(node, path=()):
    """Yields (path, key, value) for every mapping entry, nested lists included."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, (*path, index))


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _embedded_yaml(doc: dict) -> list:
    """ConfigMap data entries that are YAML files themselves (the Impala clusters file)."""
    if doc.get('kind') != 'ConfigMap':
        return []
    return [yaml.safe_load(text) for key, text in doc.get('data', {}).items()
            if key.endswith(('.yaml', '.yml'))]


# -- versions -------------------------------------------------------------------------------

def test_dockerfile_beam_version_matches_requirements_and_setup():
    pin = _beam_pin_requirements()
    setup_versions = re.findall(r"^BEAM_VERSION = '([^']+)'$",
                                (ROOT / 'setup.py').read_text(encoding='utf-8'), re.MULTILINE)
    assert setup_versions == [pin]
    froms = re.findall(r'^FROM\s+(\S+)', _dockerfile(), re.MULTILINE)
    assert froms == [f'apache/beam_python3.11_sdk:{pin}']
    # Every other mention of the Beam version in the Dockerfile (label, assertion) agrees too.
    mentioned = set(re.findall(r"beam_python3\.11_sdk:([\w.]+)|__version__ == '([\w.]+)'",
                               _dockerfile()))
    assert {version for pair in mentioned for version in pair if version} == {pin}


def test_flink_deployment_is_flink_1_20():
    deployment = _flink_deployment()
    assert deployment['apiVersion'] == 'flink.apache.org/v1beta1'
    assert deployment['spec']['flinkVersion'] == 'v1_20'
    assert re.fullmatch(r'flink:1\.20(\.\d+)?(-[\w.-]+)?', deployment['spec']['image'])
    assert 'job' not in deployment['spec'], 'a session cluster: Beam submits the job over REST'


# -- Dockerfile and build context ---------------------------------------------------------------

def test_dockerfile_installs_runtime_only_and_keeps_beam_entrypoint():
    text = _dockerfile()
    instructions = [line.split(None, 1) for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith('#')
                    and not line.startswith((' ', '\t'))]
    keywords = [parts[0].upper() for parts in instructions]
    assert 'ENTRYPOINT' not in keywords and 'CMD' not in keywords, \
        "the base image's /opt/apache/beam/boot must stay the entrypoint"
    copied = set()
    for parts in instructions:
        if parts[0].upper() == 'COPY':
            sources = [s for s in parts[1].split() if not s.startswith('--')][:-1]
            copied |= {s.rstrip('/') for s in sources}
    assert copied == RUNTIME_PATHS
    assert re.search(r'pip install --no-cache-dir\b.*-c requirements\.txt \.', text)
    assert re.search(r'^\s*(RUN|&&)\s.*\bpip check\b', text, re.MULTILINE)
    users = [parts[1].strip() for parts in instructions if parts[0].upper() == 'USER']
    assert users and users[-1].split(':')[0] not in ('0', 'root')
    labels = set(re.findall(r'(org\.opencontainers\.image\.[\w.]+)=', text))
    assert {'org.opencontainers.image.title', 'org.opencontainers.image.version',
            'org.opencontainers.image.revision'} <= labels


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a leading ! re-includes."""
    excluded = False
    for line in DOCKERIGNORE.read_text(encoding='utf-8').splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith('#'):
            continue
        negate = pattern.startswith('!')
        pattern = pattern.lstrip('!').rstrip('/')
        candidates = [pattern, pattern.replace('**/', '')] if '**/' in pattern else [pattern]
        parts = path.split('/')
        prefixes = ['/'.join(parts[:i]) for i in range(1, len(parts) + 1)]
        names = [*prefixes, *parts]  # a pattern excluding a directory excludes its contents
        if any(fnmatch.fnmatchcase(name, c) for name in names for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_context_to_runtime_files():
    for path in NOT_IN_IMAGE | {'.venv-flink', 'examples', 'deploy', 'orchestrator.db',
                                '.pytest_cache', '.ruff_cache'}:
        assert _dockerignore_excludes(path), path
    for path in RUNTIME_PATHS:
        assert not _dockerignore_excludes(path), path
    assert not _dockerignore_excludes('transforms/impala_writer.py')
    assert _dockerignore_excludes('pipeline/__pycache__/graph.cpython-311.pyc')


# -- manifests ---------------------------------------------------------------------------------

def test_every_deploy_yaml_parses():
    files = _yaml_files()
    assert {p.name for p in files} >= {'flinkdeployment.yaml', 'impala-clusters.yaml'}
    for path in files:
        docs = _documents(path)
        assert docs, f'{path.name} holds no document'
        for doc in docs:
            assert isinstance(doc, dict) and doc.get('apiVersion') and doc.get('kind'), path.name


def test_core_kubernetes_objects_validate():
    checked = 0
    for _, doc in _all_documents():
        if doc['apiVersion'] == 'v1':  # core objects; the FlinkDeployment CRD has no schema
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            checked += 1
    assert checked >= 1
    # Its pod templates are plain Pod specs, though.
    for role, pod in _pod_specs(_flink_deployment()).items():
        if pod:
            kubernetes_validate.validate(
                {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': {'name': role.lower()},
                 'spec': pod}, KUBERNETES_VERSION, strict=True)


def test_worker_pool_sidecar():
    pod, sidecar = _worker_pool(_flink_deployment())
    assert sidecar['args'] == ['--worker_pool']
    assert 'command' not in sidecar, "keep the image's /opt/apache/beam/boot entrypoint"
    assert [p['containerPort'] for p in sidecar['ports']] == [WORKER_POOL_PORT]
    names = [c['name'] for c in pod['containers']]
    assert 'flink-main-container' in names
    assert sidecar['securityContext']['runAsNonRoot'] is True


def test_files_named_in_env_are_mounted():
    """Every path handed to the pipeline lies under a mount of its container, secrets under a
    secret volume, the clusters file under the ConfigMap volume of deploy/impala-clusters.yaml."""
    configmaps = {doc['metadata']['name']: doc for _, doc in _all_documents()
                  if doc['kind'] == 'ConfigMap'}
    for _, pod, container in _containers(_flink_deployment()):
        volumes = {v['name']: v for v in pod.get('volumes', [])}
        mounts = {m['mountPath'].rstrip('/'): volumes[m['name']]
                  for m in container.get('volumeMounts', [])}
        for entry in container.get('env', []):
            name, value = entry['name'], entry.get('value', '')
            if not (name.endswith('_FILE') or name == 'IMPALA_CLUSTERS'):
                continue
            directory, _, filename = value.rpartition('/')
            assert directory in mounts, f'{name}={value} is not under a volume mount'
            volume = mounts[directory]
            if name == 'IMPALA_CLUSTERS':
                configmap = configmaps[volume['configMap']['name']]
                assert filename in configmap['data']
            else:
                items = volume['secret'].get('items')
                assert items is None or filename in {i['path'] for i in items}, name


def test_impala_clusters_file_loads_and_its_secret_files_are_mounted(tmp_path):
    (doc,) = [d for _, d in _all_documents() if d['kind'] == 'ConfigMap'
              and 'impala-clusters.yaml' in d.get('data', {})]
    path = tmp_path / 'impala-clusters.yaml'
    path.write_text(doc['data']['impala-clusters.yaml'], encoding='utf-8')
    default, clusters = load_impala_clusters(str(path))
    assert default in clusters
    pod, sidecar = _worker_pool(_flink_deployment())
    volumes = {v['name']: v for v in pod['volumes']}
    secret_files = {f"{m['mountPath'].rstrip('/')}/{item['path']}"
                    for m in sidecar['volumeMounts'] if 'secret' in volumes[m['name']]
                    for item in volumes[m['name']]['secret']['items']}
    for cluster in clusters.values():
        for secret_file in (cluster.password_file, cluster.jwt_file):
            assert secret_file is None or secret_file in secret_files, secret_file


def test_no_inline_secrets():
    for path, doc in _all_documents():
        assert doc['kind'] != 'Secret' or not (doc.get('data') or doc.get('stringData')), \
            f'{path.name}: create Secrets out of band, never with their values in the repo'
        for node in [doc, *_embedded_yaml(doc)]:
            for where, key, value in _walk(node):
                if isinstance(key, str) and SECRET_KEY.search(key):
                    assert not isinstance(value, (str, int, float)), \
                        f'{path.name}: {"/".join(map(str, where))}/{key} holds a literal value'
                if isinstance(value, list) and key in ('env',):
                    for entry in value:
                        if SECRET_ENV.search(entry['name']):
                            assert 'value' not in entry, \
                                f"{path.name}: env {entry['name']} inline; use a *_FILE path"
            for text in _strings(node):
                assert not PASSWORD_IN_URL.search(text), f'{path.name}: password in a URL'
                assert not INLINE_JAAS_PASSWORD.search(text), f'{path.name}: JAAS password'


def test_env_vars_match_the_pipeline():
    names = _env_names(_flink_deployment())
    assert REQUIRED_ENV <= names, sorted(REQUIRED_ENV - names)
    assert names & {'WAREHOUSE_URL', 'IMPALA_CLUSTERS'}
    options = (ROOT / 'pipeline' / 'options.py').read_text(encoding='utf-8')
    flag_env = set(re.findall(r"_env\('([A-Z][A-Z0-9_]*)'", options))
    assert flag_env, 'pipeline/options.py changed shape: no _env(...) fallbacks found'
    for name in sorted(names):
        if name in flag_env:
            continue
        if name in READ_OUTSIDE_OPTIONS:
            reader = READ_OUTSIDE_OPTIONS[name]
            source = (ROOT / reader).read_text(encoding='utf-8')
            assert f"'{name}'" in source, f'{name} is no longer read by {reader}'
            continue
        raise AssertionError(
            f'deploy/flinkdeployment.yaml sets {name}, which the pipeline does not read')

