"""deeparch: build, inspect, train, look inside, transfer and shrink deep CNNs."""
__version__ = "0.1.0"
