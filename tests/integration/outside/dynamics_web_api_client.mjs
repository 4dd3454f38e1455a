// The npm package `dynamics-web-api` (a Dataverse Web API client no one here wrote) driven against
// the sandbox's Dataverse emulator. Run by tests/integration/outside/test_dynamics_web_api.py:
//
//   NODE_EXTRA_CA_CERTS=<sandbox CA file> node dynamics_web_api_client.mjs < plan.json
//
// The plan (JSON on stdin) names the org URL, a bearer token and the rows to use:
//   {url, token, accountId, namePrefix, pageSize,
//    batches: {changeset: {stale, fresh, contractId}, continue: {stale, fresh, contractId}},
//    upsert: {providerSubscriptionId, accountId, contractId, missingProviderSubscriptionId,
//             batchProviderSubscriptionId}}
// The token is handed to the library through its `onTokenRefresh` callback. The script prints
// ONE JSON document on stdout: what the library returned for each step (errors as {status, code,
// message}), so the test can assert on the library's view and, separately, on the emulator's rows.
// Nothing here decides whether the emulator is right: the test does.

import { DynamicsWebApi } from "dynamics-web-api";

const SET = "work365_subscriptions";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

// A library error (an Error with status/error fields, or an array of batch parts) as plain JSON.
function failure(error) {
  if (Array.isArray(error)) return { batchParts: error.map(outcome) };
  return {
    failed: true,
    status: error.status ?? null,
    code: error.error?.code ?? error.code ?? null,
    message: error.error?.message ?? error.message ?? String(error),
  };
}

// What the library returned, as JSON: errors as above, `undefined` (no value) as null.
function outcome(value) {
  if (Array.isArray(value)) return value.map(outcome);
  if (value instanceof Error) return failure(value);
  return value === undefined ? null : value;
}

async function attempt(step) {
  try {
    return outcome(await step());
  } catch (error) {
    return failure(error);
  }
}

async function queries(api, plan) {
  const filtered = await api.retrieveMultiple({
    collection: SET,
    select: ["work365_name", "work365_providersubscriptionid", "_work365_billingcontract_value"],
    filter: `_work365_account_value eq ${plan.accountId}`,
    orderBy: ["work365_name asc"],
    count: true,
  });
  const text = await api.retrieveMultiple({
    collection: SET,
    select: ["work365_name"],
    filter: `startswith(work365_name,'${plan.namePrefix.replaceAll("'", "''")}')`,
  });

  // Paging by hand, one page at a time, to see each page and each @odata.nextLink.
  const pages = [];
  let nextLink;
  do {
    const page = await api.retrieveMultiple(
      { collection: SET, select: ["work365_subscriptionid"], maxPageSize: plan.pageSize },
      nextLink,
    );
    pages.push({
      ids: page.value.map((r) => r.work365_subscriptionid),
      hasNextLink: Boolean(page.oDataNextLink),
    });
    nextLink = page.oDataNextLink;
  } while (nextLink && pages.length < 100);
  // ...and the library's own loop over @odata.nextLink.
  const all = await api.retrieveAll({
    collection: SET,
    select: ["work365_subscriptionid"],
    maxPageSize: plan.pageSize,
  });

  // Conditional retrieval with the ETag just read: 304 Not Modified, which the library answers
  // with no value; with annotations asked for, Dataverse never answers 304.
  const [first] = filtered.value;
  const conditional = { key: first.work365_subscriptionid, etag: first["@odata.etag"] };
  const unchanged = { collection: SET, key: conditional.key, select: ["work365_name"] };
  conditional.notModified = await attempt(() =>
    api.retrieve({ ...unchanged, ifnonematch: conditional.etag }),
  );
  conditional.withAnnotations = await attempt(() =>
    api.retrieve({
      ...unchanged,
      ifnonematch: conditional.etag,
      includeAnnotations: "OData.Community.Display.V1.FormattedValue",
    }),
  );

  // count(): `/$count` (a number as text/plain) without a filter, `$count=true` with one.
  const counts = {
    all: await attempt(() => api.count({ collection: SET })),
    filtered: await attempt(() =>
      api.count({ collection: SET, filter: `_work365_account_value eq ${plan.accountId}` }),
    ),
  };

  // A URL over 2,000 characters: the library sends the GET inside a $batch instead.
  const ids = pages.flatMap((p) => p.ids);
  const padding = Array.from({ length: 30 }, (_, i) =>
    `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
  );
  const longFilter = [...ids, ...padding].map((id) => `work365_subscriptionid eq ${id}`);
  const long = await api.retrieveMultiple({
    collection: SET,
    select: ["work365_subscriptionid"],
    filter: longFilter.join(" or "),
  });

  return {
    conditional,
    counts,
    longFilter: {
      length: longFilter.join(" or ").length,
      ids: long.value.map((r) => r.work365_subscriptionid),
    },
    filtered: filtered.value.map((r) => ({
      name: r.work365_name,
      providerSubscriptionId: r.work365_providersubscriptionid,
      billingContractId: r._work365_billingcontract_value,
      etag: r["@odata.etag"] ?? null,
    })),
    filteredCount: filtered.oDataCount ?? null,
    filteredNextLink: filtered.oDataNextLink ?? null,
    startsWith: text.value.map((r) => r.work365_name),
    pages,
    retrieveAll: all.value.map((r) => r.work365_subscriptionid),
  };
}

async function etagOf(api, id) {
  const row = await api.retrieve({ collection: SET, key: id, select: ["work365_name"] });
  return row["@odata.etag"];
}

// Two PATCHes with If-Match in one $batch, then a GET; the first PATCH carries an ETag made stale
// just before. `spec` names the rows ({stale, fresh}) and the contract the fresh write binds.
async function staleBatch(api, spec, { label, inChangeSet, continueOnError }) {
  const { stale, fresh, contractId } = spec;
  const staleEtag = await etagOf(api, stale);
  const freshEtag = await etagOf(api, fresh);
  // Someone else changes the first row between our read and our write.
  const meanwhile = await api.update({
    collection: SET,
    key: stale,
    data: { work365_name: `${label}: changed meanwhile` },
    ifmatch: staleEtag,
  });
  api.startBatch();
  api.update({
    collection: SET,
    key: stale,
    data: { work365_name: `${label}: stale write` },
    ifmatch: staleEtag,
  });
  api.update({
    collection: SET,
    key: fresh,
    data: {
      work365_name: `${label}: fresh write`,
      "work365_BillingContract@odata.bind": `/work365_billingcontracts(${contractId})`,
    },
    ifmatch: freshEtag,
  });
  // A read after the writes: GETs never go in a change set, so this is a part of its own.
  api.retrieve({ collection: SET, key: fresh, select: ["work365_name"] });
  const options = {};
  if (inChangeSet !== undefined) options.inChangeSet = inChangeSet;
  if (continueOnError !== undefined) options.continueOnError = continueOnError;
  const result = await attempt(() => api.executeBatch(options));
  return { meanwhile, staleEtag, freshEtag, result };
}

async function upserts(api, plan) {
  const { providerSubscriptionId, accountId, contractId } = plan.upsert;
  const { missingProviderSubscriptionId, batchProviderSubscriptionId } = plan.upsert;
  const key = `work365_providersubscriptionid='${providerSubscriptionId}'`;
  const select = ["work365_subscriptionid", "work365_name", "_work365_billingcontract_value"];
  const created = await attempt(() =>
    api.upsert({
      collection: SET,
      key,
      // The key value is in the URL only: Microsoft's upsert doc says not to repeat it.
      data: {
        work365_name: "Created through the alternate key",
        "work365_Account@odata.bind": `/accounts(${accountId})`,
        "work365_BillingContract@odata.bind": `/work365_billingcontracts(${contractId})`,
      },
      returnRepresentation: true,
      select,
    }),
  );
  const updated = await attempt(() =>
    api.upsert({
      collection: SET,
      key,
      data: { work365_name: "Updated through the alternate key" },
      returnRepresentation: true,
      select,
    }),
  );
  // Without return=representation the library takes the id from OData-EntityId.
  const withoutRepresentation = await attempt(() =>
    api.upsert({ collection: SET, key, data: { work365_name: "Upserted again" } }),
  );
  // Create-only: If-None-Match: * on an existing key is a 412, which the library turns into null.
  const createOnly = await attempt(() =>
    api.upsert({ collection: SET, key, data: { work365_name: "Must not win" }, ifnonematch: "*" }),
  );
  const byKey = await attempt(() => api.retrieve({ collection: SET, key, select }));
  // Update-only: If-Match: * on a key no row has is a 404 (nothing created), null for the library.
  const missingKey = `work365_providersubscriptionid='${missingProviderSubscriptionId}'`;
  const updateOnlyMissing = await attempt(() =>
    api.upsert({
      collection: SET,
      key: missingKey,
      data: { work365_name: "Must not exist" },
      ifmatch: "*",
    }),
  );
  // Create-only upserts through the key inside a $batch, as the sync's create mode sends them:
  // a new key (created) and the key created above (412), each part on its own.
  const batchKey = `work365_providersubscriptionid='${batchProviderSubscriptionId}'`;
  api.startBatch();
  api.upsert({
    collection: SET,
    key: batchKey,
    data: {
      work365_name: "Created in a batch through the alternate key",
      "work365_Account@odata.bind": `/accounts(${accountId})`,
    },
    ifnonematch: "*",
  });
  api.upsert({
    collection: SET,
    key,
    data: { work365_name: "Must not win either" },
    ifnonematch: "*",
  });
  const batch = await attempt(() =>
    api.executeBatch({ inChangeSet: false, continueOnError: true }),
  );
  // Clear the lookup as the service does (PATCH "<nav>@odata.bind": null with If-Match).
  const cleared = await attempt(() =>
    api.update({
      collection: SET,
      key,
      data: { "work365_BillingContract@odata.bind": null },
      ifmatch: byKey["@odata.etag"],
    }),
  );
  return {
    created,
    updated,
    withoutRepresentation,
    createOnly,
    byKey,
    updateOnlyMissing,
    batch,
    cleared,
  };
}

async function main() {
  const plan = await readStdin();
  let tokenRequests = 0;
  const api = new DynamicsWebApi({
    serverUrl: plan.url,
    dataApi: { version: "9.2" },
    onTokenRefresh: async () => {
      tokenRequests += 1;
      return plan.token;
    },
    timeout: 10000,
  });
  const out = {};
  out.queries = await queries(api, plan);
  // The library's default: every write of a batch in one change set.
  out.batchInChangeSet = await staleBatch(api, plan.batches.changeset, { label: "changeset" });
  out.batchContinueOnError = await staleBatch(api, plan.batches.continue, {
    label: "continue",
    inChangeSet: false,
    continueOnError: true,
  });
  out.upsert = await upserts(api, plan);
  out.tokenRequests = tokenRequests;
  process.stdout.write(JSON.stringify(out, null, 2) + "\n");
}

main().catch((error) => {
  process.stderr.write(`dynamics-web-api client failed: ${JSON.stringify(failure(error))}\n`);
  process.stderr.write(`${error?.stack ?? ""}\n`);
  process.exit(1);
});
