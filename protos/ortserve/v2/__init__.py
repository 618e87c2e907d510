"""Generated gRPC stubs of the Open Inference Protocol (package `inference`, see protos/ortserve/v2/grpc_predict_v2.proto); regenerate with `make protos`."""
