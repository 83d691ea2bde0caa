"""ACTION information-sharing broker: MOU-enforcing routing of Avro events on Apache Kafka."""

__version__ = "0.1.0"
