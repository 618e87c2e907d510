"""Generated gRPC stubs of the ortserve.v1 wire API (see protos/ortserve/v1/inference.proto); regenerate with `make protos`."""
