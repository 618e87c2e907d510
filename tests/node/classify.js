// Calls ortserve.v1.Inference/Classify from Node.js with stubs loaded at run time from protos/ (no codegen step),
// and prints the response as one JSON object. Used by tests/test_node_client.py.
//
//   node classify.js TARGET MODEL TOP_K TEXT [TEXT ...]
//
// TLS and tokens come from the environment: ORTSERVE_ROOT_CERTIFICATES (PEM file of the CA to trust; switches to
// TLS), ORTSERVE_CLIENT_CERTIFICATE and ORTSERVE_CLIENT_KEY (PEM files, for mutual TLS), ORTSERVE_TOKEN (bearer).
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "protos");

function main(argv) {
  const [target, model, topK, ...texts] = argv;
  if (!target || !model || topK === undefined || texts.length === 0) {
    console.error("usage: node classify.js TARGET MODEL TOP_K TEXT [TEXT ...]");
    return process.exit(2);
  }
  const definition = protoLoader.loadSync("ortserve/v1/inference.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true, // field names as in the .proto (model_version, top_k), not camelCase
    longs: String,
    enums: String,
    defaults: true,
  });
  const { Inference } = grpc.loadPackageDefinition(definition).ortserve.v1;
  const client = new Inference(target, credentialsFromEnv(process.env));
  const metadata = new grpc.Metadata();
  if (process.env.ORTSERVE_TOKEN) metadata.set("authorization", `Bearer ${process.env.ORTSERVE_TOKEN}`);
  const deadline = new Date(Date.now() + 10_000);
  client.Classify({ model, texts, top_k: Number(topK) }, metadata, { deadline }, (error, response) => {
    client.close();
    if (error) {
      console.error(JSON.stringify({ code: grpc.status[error.code], details: error.details }));
      return process.exit(1);
    }
    process.stdout.write(JSON.stringify(response) + "\n");
  });
}

function credentialsFromEnv(env) {
  if (!env.ORTSERVE_ROOT_CERTIFICATES) return grpc.credentials.createInsecure();
  const read = (name) => (env[name] ? fs.readFileSync(env[name]) : null);
  return grpc.credentials.createSsl(
    read("ORTSERVE_ROOT_CERTIFICATES"),
    read("ORTSERVE_CLIENT_KEY"),
    read("ORTSERVE_CLIENT_CERTIFICATE"),
  );
}

main(process.argv.slice(2));
