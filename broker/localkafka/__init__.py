"""A real Apache Kafka (KRaft) for development and tests, assembled from Maven Central jars."""

from broker.localkafka.cluster import ClusterState, LocalCluster, NodeState
from broker.localkafka.distribution import KafkaDistribution, resolve_distribution

__all__ = ["ClusterState", "KafkaDistribution", "LocalCluster", "NodeState", "resolve_distribution"]
