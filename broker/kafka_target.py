"""Which Kafka a command talks to, and as whom: one rule for every command line, the
operator's (``action-broker``) and the members' (``action-publish``, ``action-feed``).

1. ``--bootstrap-server``, else ACTION_KAFKA_BOOTSTRAP: that address, reached with the
   ACTION_KAFKA_* security settings;
2. else ``--name``: the local cluster of that name (``action-broker kafka up --name``);
3. else the local cluster ``default``, when there is one.

On a local cluster the operator's commands connect as its super user ``admin``, with the
password from the cluster's folder, as the ``kafka`` commands find it. A member's
commands connect as that member, with the password ``action-broker provision`` wrote to
the credentials folder (what ``action-broker kafka env --user <member>`` exports), so the
member's ACLs hold just as on the consortium's cluster. ACTION_KAFKA_SASL_USERNAME names
another user (with ACTION_KAFKA_SASL_PASSWORD, else its provisioned password).

The members' SDK imports this module too: the local cluster's code (and the operator's
settings, which know where clusters live) load only when a local cluster is asked for,
which happens on a development machine, never with an address configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from broker.configuration import KafkaClientSettings
from broker.connection import KafkaConnection
from broker.errors import ClusterNotRunningError, ConfigError

if TYPE_CHECKING:
    from broker.localkafka import LocalCluster
    from broker.settings import Settings

DEFAULT_CLUSTER = "default"


def local_cluster(
    name: str, data_dir: Path | None = None, settings: Settings | None = None
) -> LocalCluster:
    """The local cluster ``name`` (in <cache>/clusters/<name>), or the one in ``data_dir``;
    its hints name it the way the user did."""
    from broker.localkafka import LocalCluster
    from broker.settings import load_settings

    settings = settings or load_settings()
    if data_dir is not None:
        return LocalCluster(data_dir, settings, selector=f" --data-dir {data_dir}")
    selector = "" if name == DEFAULT_CLUSTER else f" --name {name}"
    return LocalCluster(settings.cache_dir / "clusters" / name, settings, selector=selector)


def kafka_target(
    bootstrap: str | None,
    cluster_name: str | None,
    settings: KafkaClientSettings,
    *,
    member: str | None = None,
) -> KafkaConnection:
    """The Kafka to talk to (see the module's rule), as ``member`` when one is given, else
    as the operator."""
    if bootstrap and cluster_name:
        raise ConfigError(
            "--bootstrap-server and --name both name a Kafka", hint="pass one of them"
        )
    address = bootstrap or (None if cluster_name else settings.kafka_bootstrap)
    if address:
        return settings.connection_to(address)
    cluster = local_cluster(cluster_name or DEFAULT_CLUSTER)
    if not cluster.exists():
        if cluster_name:
            raise ClusterNotRunningError(
                f"no local cluster named {cluster_name!r} (in {cluster.data_dir})",
                hint=f"start it with `action-broker kafka up --name {cluster_name}`",
            )
        raise ClusterNotRunningError(
            "no Kafka to talk to",
            hint="pass --bootstrap-server or --name, set ACTION_KAFKA_BOOTSTRAP, or start "
            "the local cluster with `action-broker kafka up`",
        )
    from broker.localkafka.cluster import ADMIN_USER

    admin = cluster.connection()
    user = settings.kafka_sasl_username or member or ADMIN_USER
    if not admin.uses_sasl or user == ADMIN_USER:
        return admin
    secret = settings.kafka_sasl_password
    if secret is not None:
        return admin.as_user(user, secret.get_secret_value())
    from broker.provision import read_password

    return admin.as_user(user, read_password(cluster.settings.credentials_folder, user))
