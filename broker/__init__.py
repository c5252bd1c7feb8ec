"""alertbroker's pure domain core: schemas, wire format, decoding, enrichment, metrics.

Imports no Kafka client and no torch.
"""

__version__ = "0.1.0"
