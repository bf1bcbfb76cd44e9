"""Packaging of the TSC orchestrator (runtime modules only; tests and test servers stay out)."""

import setuptools

BEAM_VERSION = '2.73.0'

setuptools.setup(
    name='tsc-orchestrator',
    version='0.1.0',
    description='Event-driven TSC orchestrator as an Apache Beam streaming pipeline',
    python_requires='>=3.11,<3.12',
    packages=['pipeline', 'transforms'],
    py_modules=['run_pipeline'],
    install_requires=[
        f'apache-beam=={BEAM_VERSION}',
        'requests==2.34.2',
        'tenacity==9.2.1',
        'impyla==0.24.0',
        'thrift==0.25.0',
        'PyYAML==6.0.4',
        'croniter==7.0.0',
    ],
    extras_require={
        'test': ['pytest==9.2.0', 'pytest-timeout==2.4.0', 'kubernetes-validate==1.37.0',
                 'ruff==0.17.6'],
    },
)
