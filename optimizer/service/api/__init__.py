"""Generated protobuf/gRPC code (proto/generate.py). Do not edit."""
