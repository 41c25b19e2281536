from setuptools import find_packages, setup

setup(
    name="twisted-mcp",
    version="0.1.0",
    description="A Model Context Protocol gateway built on Twisted: one MCP endpoint "
    "in front of many supervised MCP servers.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["twisted_mcp", "twisted_mcp.*"]) + ["twisted.plugins"],
    package_data={"twisted.plugins": ["mcp_gateway.py"]},
    install_requires=[
        "twisted[tls]>=25.5",  # Site(parsePOSTFormSubmission=...)
        "treq>=24.9",
        "pyyaml>=6",
        "attrs>=23.1",
        "jsonschema>=4.18",
        "google-re2>=1.1",
        "PyJWT[crypto]>=2.8",
        "cryptography>=41",  # AES-GCM and HKDF for the OAuth token store (also pulled in by PyJWT[crypto])
        "prometheus_client>=0.17",
        "orjson>=3.9.1",  # orjson.Fragment (3.9.0); no leak when a default raises (3.9.1)
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-timeout>=2.3",
            "mcp>=2.3",
            "mcp-server-time",
            "cryptography",
            "psycopg[binary]>=3.1",
            "hypothesis>=6.100",
            "txredisapi>=1.6",
        ],
        # Coverage-guided fuzzing (make fuzz); atheris ships manylinux wheels for CPython 3.8-3.11.
        "fuzz": ["atheris>=2.3"],
        "postgres": ["psycopg[binary]>=3.1"],
        # state: {redis: URL} (replicas sharing limits, flags and sessions through Redis).
        "redis": ["txredisapi>=1.6"],
        # make lint: style and imports (ruff.toml), types (mypy.ini), layers (.importlinter).
        "lint": ["ruff>=0.6", "mypy>=1.11", "mypy-zope>=1.0", "types-PyYAML", "import-linter>=2.1"],
    },
    entry_points={"console_scripts": ["twisted-mcp = twisted_mcp.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
    ],
)
