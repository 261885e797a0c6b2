#!/usr/bin/env node
// A Node.js gRPC client for the learnware-dock services. It loads the contracts straight from
// protos/ at run time (no generated code) and calls each running service once or twice.
//
// Usage: node client.js '<config JSON>'
//   config = {
//     "addresses": {"spec": "127.0.0.1:P", "registry": "...", "search": "...", "reuse": "..."},
//     "left_json_path": ".../table_a_d10.rkme.json",
//     "right_json_path": ".../table_b_d10.rkme.json",
//     "expected": {"mmd2": 0.0822..., "inner_product": 0.1634...},   // optional
//     "protos_dir": ".../protos",                                      // optional
//     "deadline_ms": 10000                                            // optional
//   }
// Prints one JSON object with the results on stdout; exits non-zero on any failure.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const SERVICE_NAMES = {
  spec: 'lwdock.spec.v1.SpecService',
  registry: 'lwdock.registry.v1.RegistryService',
  search: 'lwdock.search.v1.SearchService',
  reuse: 'lwdock.reuse.v1.ReuseService',
};
const REGISTRY_READY_WAIT_MS = 10000;
const REL_TOLERANCE = 1e-9;

class CheckFailed extends Error {}

function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

function relClose(actual, expected, rel) {
  return Math.abs(actual - expected) <= rel * Math.max(Math.abs(actual), Math.abs(expected));
}

// Both loaders resolve imports against protos/ only. The well-known types (google/protobuf/*)
// are not vendored there: protobufjs bundles any, duration, empty, field_mask, struct,
// timestamp and wrappers, and proto-loader registers descriptor.proto (and api, type,
// source_context) from protobufjs's bundled JSON, so nothing is fetched at run time.
function loadServices(protosDir) {
  const files = [
    'grpc/health/v1/health.proto',
    'lwdock/spec/v1/spec_service.proto',
    'lwdock/registry/v1/registry_service.proto',
    'lwdock/search/v1/search_service.proto',
    'lwdock/reuse/v1/reuse_service.proto',
    'lwdock/inference/grpc_predict_v2.proto',
  ];
  const definition = protoLoader.loadSync(files, {
    includeDirs: [protosDir],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition);
}

function loadStatusTypes(protosDir) {
  const root = new protobuf.Root();
  root.resolvePath = (origin, target) => {
    if (path.isAbsolute(target)) return target;
    const candidate = path.join(protosDir, target);
    // null: unresolved; protobufjs then uses its bundled google/protobuf/* (any, duration).
    return fs.existsSync(candidate) ? candidate : null;
  };
  root.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], {
    keepCase: true,
  });
  root.resolveAll();
  return {
    Status: root.lookupType('google.rpc.Status'),
    BadRequest: root.lookupType('google.rpc.BadRequest'),
    root,
  };
}

function unary(client, method, request, deadlineMs) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + deadlineMs }, (err, response) => {
      if (err) reject(err);
      else resolve(response);
    });
  });
}

function describeError(err) {
  if (err instanceof CheckFailed) return err.message;
  if (err && typeof err.code === 'number') {
    return `${grpc.status[err.code] || err.code}: ${err.details}`;
  }
  return String(err && err.stack ? err.stack : err);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Health/Check for "" and the service's full name; for the registry, retry until SERVING
// (it reports NOT_SERVING until its database answered).
async function checkHealth(health, fullName, waitMs, deadlineMs) {
  const statuses = {};
  for (const service of ['', fullName]) {
    const until = Date.now() + waitMs;
    let last;
    for (;;) {
      try {
        const response = await unary(health, 'Check', { service }, deadlineMs);
        last = response.status;
      } catch (err) {
        last = `error ${describeError(err)}`;
      }
      if (last === 'SERVING' || Date.now() >= until) break;
      await sleep(200);
    }
    statuses[service] = last;
    check(last === 'SERVING', `health of "${service}" is ${last}, not SERVING`);
  }
  return statuses;
}

function decodeStatusDetails(err, types) {
  const values = err.metadata ? err.metadata.get('grpc-status-details-bin') : [];
  check(values.length === 1, `expected one grpc-status-details-bin trailer, got ${values.length}`);
  const status = types.Status.decode(values[0]);
  const decoded = { code: status.code, message: status.message, details: [] };
  const violations = [];
  for (const any of status.details) {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    decoded.details.push(typeName);
    if (typeName === 'google.rpc.BadRequest') {
      const badRequest = types.BadRequest.decode(any.value);
      for (const v of badRequest.field_violations) {
        violations.push({ field: v.field, description: v.description });
      }
    }
  }
  decoded.field_violations = violations;
  return decoded;
}

const results = { ok: false };

async function main() {
  check(process.argv.length === 3, 'usage: node client.js <config JSON>');
  const config = JSON.parse(process.argv[2]);
  const addresses = config.addresses;
  for (const name of Object.keys(SERVICE_NAMES)) {
    check(addresses && typeof addresses[name] === 'string', `missing address for ${name}`);
  }
  const protosDir = path.resolve(config.protos_dir || path.join(__dirname, '..', '..', '..', 'protos'));
  const deadlineMs = config.deadline_ms || 10000;

  const pkg = loadServices(protosDir);
  const statusTypes = loadStatusTypes(protosDir);
  const credentials = grpc.credentials.createInsecure();
  const clients = [];
  const make = (Ctor, address) => {
    const client = new Ctor(address, credentials);
    clients.push(client);
    return client;
  };

  results.health = {};
  try {
    // Health of every service.
    for (const [name, fullName] of Object.entries(SERVICE_NAMES)) {
      const health = make(pkg.grpc.health.v1.Health, addresses[name]);
      const waitMs = name === 'registry' ? REGISTRY_READY_WAIT_MS : 0;
      results.health[name] = await checkHealth(health, fullName, waitMs, deadlineMs);
    }

    // spec: ComputeSpecificationDistance on the two reference files.
    const spec = make(pkg.lwdock.spec.v1.SpecService, addresses.spec);
    const left = { reference_json: fs.readFileSync(config.left_json_path, 'utf8') };
    const right = { reference_json: fs.readFileSync(config.right_json_path, 'utf8') };
    const distance = await unary(spec, 'ComputeSpecificationDistance', { left, right }, deadlineMs);
    results.spec = {
      mmd2: distance.mmd2,
      inner_product: distance.inner_product,
      left_self_inner_product: distance.left_self_inner_product,
      right_self_inner_product: distance.right_self_inner_product,
    };
    if (config.expected) {
      for (const key of ['mmd2', 'inner_product']) {
        check(
          relClose(distance[key], config.expected[key], REL_TOLERANCE),
          `spec ${key} ${distance[key]} differs from ${config.expected[key]} beyond ${REL_TOLERANCE}`,
        );
      }
    }

    // spec, error case: `left` unset -> INVALID_ARGUMENT with a BadRequest detail.
    let rejected = null;
    try {
      await unary(spec, 'ComputeSpecificationDistance', { right }, deadlineMs);
    } catch (err) {
      rejected = err;
    }
    check(rejected !== null, 'ComputeSpecificationDistance without left succeeded');
    check(
      rejected.code === grpc.status.INVALID_ARGUMENT,
      `ComputeSpecificationDistance without left: ${describeError(rejected)}`,
    );
    const detail = decodeStatusDetails(rejected, statusTypes);
    check(detail.code === grpc.status.INVALID_ARGUMENT, `google.rpc.Status code ${detail.code}`);
    check(detail.field_violations.length > 0, 'no BadRequest field violation in the details');
    results.spec_error = {
      code: grpc.status[rejected.code],
      status_code: detail.code,
      message: detail.message,
      detail_types: detail.details,
      field_violations: detail.field_violations,
    };
    check(
      detail.field_violations.some((v) => v.field === 'left'),
      `no field violation for "left": ${JSON.stringify(detail.field_violations)}`,
    );

    // registry: GetSemanticVocabulary.
    const registry = make(pkg.lwdock.registry.v1.RegistryService, addresses.registry);
    const vocabulary = await unary(registry, 'GetSemanticVocabulary', {}, deadlineMs);
    results.registry = {
      keys: Object.fromEntries(vocabulary.keys.map((k) => [k.key, { type: k.type, values: k.values }])),
    };
    const data = results.registry.keys.Data;
    check(data !== undefined, 'semantic vocabulary has no "Data" key');
    for (const value of ['Table', 'Image', 'Text']) {
      check(data.values.includes(value), `vocabulary "Data" lacks ${value}`);
    }

    // search: GetIndexStats.
    const search = make(pkg.lwdock.search.v1.SearchService, addresses.search);
    const stats = await unary(search, 'GetIndexStats', {}, deadlineMs);
    results.search = {
      learnware_count: stats.learnware_count,
      embedding_dimension: stats.embedding_dimension,
      embedding_seed: stats.embedding_seed,
      synced: stats.synced,
      last_sequence: stats.last_sequence,
    };
    check(stats.embedding_dimension > 0, `embedding_dimension ${stats.embedding_dimension}`);

    // reuse: GetRuntimeInfo, and the KServe v2 ServerLive on the same port.
    const reuse = make(pkg.lwdock.reuse.v1.ReuseService, addresses.reuse);
    const runtime = await unary(reuse, 'GetRuntimeInfo', {}, deadlineMs);
    results.reuse = {
      sandbox_available: runtime.sandbox_available,
      sandbox_kind: runtime.sandbox_kind,
      runtimes: runtime.runtimes.length,
      strategies: runtime.strategies.length,
    };
    const inference = make(pkg.inference.GRPCInferenceService, addresses.reuse);
    const live = await unary(inference, 'ServerLive', {}, deadlineMs);
    results.reuse.server_live = live.live;
    check(live.live === true, 'inference ServerLive is not live');

    results.ok = true;
    process.stdout.write(JSON.stringify(results) + '\n');
  } finally {
    for (const client of clients) client.close();
  }
}

main().catch((err) => {
  results.ok = false;
  results.error = describeError(err);
  process.stdout.write(JSON.stringify(results) + '\n');
  process.stderr.write(`interop client failed: ${results.error}\n`);
  process.exitCode = 1;
});
