"""HTTP beside gRPC, in the same process and event loop: an ASGI app (`app.HttpApp`) served by uvicorn
(`listener.HttpListener`), with one module of routes per protocol (`routes_v2`: the Open Inference Protocol REST,
`routes_mlflow`: MLflow's scoring protocol, `routes_native`: `ortserve.v1` as JSON, `routes_docs`: the OpenAPI
document and its offline page). Routes only convert JSON ⇄ domain types; everything else is `InferenceService`'s,
as for gRPC.
"""
