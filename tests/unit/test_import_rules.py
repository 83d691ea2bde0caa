"""The members' SDK (producers/, consumers/) stands apart from the router: it imports
the wire contract, the codec and catalog, the event models and the crypto, never the
router, its settings, its CLI or the policy engine. A rename inside the router cannot
break a member's embedded SDK."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

BROKER = Path(__file__).resolve().parents[2] / "broker"
SDK_MODULES = (
    "producers.publisher",
    "producers.importing",
    "producers.journal",
    "producers.synthetic",
    "producers.cli",
    "consumers.feed_reader",
    "consumers.store",
    "consumers.export",
    "consumers.stix_export",
    "consumers.misp_export",
    "consumers.stix_collection",
    "consumers.taxii_server",
    "consumers.dossier",
    "consumers.workspace",
    "consumers.audit_reader",
    "consumers.cli",
)

#: What the SDK may load of the broker package: the contract, the codec and catalog,
#: the events, the crypto and key files, match tokens (for the operator's workspace,
#: with the consortium key), the registry as a trust store, its own settings and the
#: shared console.
ALLOWED = frozenset(
    {
        "broker",
        "broker.avro_names",
        "broker.base64url",
        "broker.catalog",
        "broker.codec",
        "broker.configuration",
        "broker.connection",
        "broker.console",
        "broker.contract",
        "broker.errors",
        "broker.events",
        # --name: the local cluster's code loads only when one is asked for.
        "broker.kafka_target",
        "broker.keys",
        "broker.listening",  # the workspace's port, as every server's
        "broker.match_tokens",
        "broker.member_settings",
        "broker.membership",
        "broker.normalize",
        "broker.provenance",
        "broker.sdk_kafka",
        "broker.sealing",
        "broker.signing",
        "broker.typed_yaml",
        "broker.wire",
    }
)

#: Made unimportable in the child: any import of these by the SDK fails loudly.
FORBIDDEN = (
    "broker.router",
    "broker.routing",
    "broker.routing_pool",
    "broker.settings",
    "broker.cli",
    "broker.policy",
    "broker.demo",
    "demo",
    "broker.localkafka",
    "broker.provision",
    "broker.audit",
)

_CHILD = """
import importlib.abc, json, sys

class Forbidden(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
            raise ImportError(f"the SDK imported {name}")
        return None

sys.meta_path.insert(0, Forbidden())
for module in SDK_MODULES:
    importlib.import_module(module)
print(json.dumps(sorted(m for m in sys.modules if m == "broker" or m.startswith("broker."))))
"""


def _load_sdk() -> subprocess.CompletedProcess[str]:
    program = f"FORBIDDEN = {FORBIDDEN!r}\nSDK_MODULES = {SDK_MODULES!r}\n" + _CHILD
    return subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=120
    )


def test_the_sdk_imports_with_the_router_modules_unimportable() -> None:
    loaded = _load_sdk()
    assert loaded.returncode == 0, loaded.stderr[-2000:]


def test_the_sdk_loads_only_the_contract_codec_events_and_crypto() -> None:
    loaded = _load_sdk()
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert set(json.loads(loaded.stdout)) <= ALLOWED, set(json.loads(loaded.stdout)) - ALLOWED


def test_the_broker_package_never_imports_the_sdk_or_the_demo() -> None:
    """The packages depend one way: producers and consumers on broker, never back."""
    offenders = []
    for path in sorted(BROKER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(BROKER.parent)}: {name}"
                for name in names
                if name.split(".")[0] in ("producers", "consumers", "demo")
            ]
    assert offenders == []


def test_the_router_loads_neither_the_demo_nor_its_keys() -> None:
    """The demo keys are imported only when ACTION_DEMO_KEYS asks for them."""
    program = (
        "import sys, broker.router, broker.cli, broker.cli.router\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('producers', 'consumers', 'demo') or m == 'policies.demo_keys'))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=120
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.strip() == "[]"


#: The pure core: what is decided and signed, apart from Kafka I/O.
PURE_CORE = (
    "contract.py",
    "base64url.py",
    "membership.py",
    "events.py",
    "codec.py",
    "wire.py",
    "signing.py",
    "provenance.py",
    "sealing.py",
    "audit.py",
    "routing.py",
    "claims.py",
    "ledger.py",
    "embargo.py",
    "policy",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_pure_core_imports_no_kafka_client_and_nothing_of_the_service() -> None:
    """Schemas, policy, crypto and the routing of one record stay testable without a
    broker: no Kafka client, and nothing of the router service, its CLI or settings."""
    files = [
        path
        for entry in PURE_CORE
        for path in ((BROKER / entry).rglob("*.py") if entry == "policy" else [BROKER / entry])
    ]
    forbidden: tuple[str, ...] = (
        "kafka",
        "confluent_kafka",
        "broker.router",
        "broker.routing_pool",
    )
    forbidden += ("broker.cli", "broker.settings", "broker.provision", "broker.localkafka")
    offenders = [
        f"{path.relative_to(BROKER.parent)}: {name}"
        for path in files
        for name in sorted(_imports(path))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]
    assert offenders == []
