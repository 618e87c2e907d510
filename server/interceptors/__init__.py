"""The one interceptor chain (built in `chain.py`) every RPC of the server passes, whatever service it belongs to.

`build_interceptors` makes the chain from the settings; `OrtServer` hands it to `grpc.aio.server(interceptors=...)`,
so a service added later (the V2 inference service, anything else) runs inside it without opting in. Outermost first:

1. `RequestIdInterceptor`: the call's id, from `x-request-id` metadata when it is sane, else a new one; returned
   in the trailing metadata and available to everything inside as `current_request_id()`.
2. the `extra` interceptors given to `build_interceptors` (the place for metrics: they see every call, including
   the ones refused below, and can read its final status after it returns or raises).
3. `ErrorStatusInterceptor`: undecodable request bytes become INVALID_ARGUMENT; domain errors become their status
   code through `STATUS_FOR_ERROR` (`errors.ERROR_STATUS`, the table the HTTP port uses too); anything else
   becomes INTERNAL. The caller gets a short message and the request id; the log gets the detail under the same
   id, rate-limited.
4. `TokenAuthInterceptor` (when tokens are configured): UNAUTHENTICATED before the request is even decoded, and
   PERMISSION_DENIED when a token limited to some models names another one.
"""
