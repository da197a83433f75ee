// The Shareflow dashboard: everything comes through the public GraphQL API with the signed-in
// key, so a partner sees exactly its own slice. The key lives in sessionStorage only.
"use strict";

const KEY = "shareflow.apiKey";
const $ = (id) => document.getElementById(id);
let socket = null;

async function graphql(query, variables = {}) {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${sessionStorage.getItem(KEY)}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors && body.errors.length) throw new Error(body.errors[0].message);
  return body.data;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

const ME = `{ me { party { id name kind } network { name currency periods { key status } } } }`;
const PERIOD = `query($period: String!) {
  revenueFlows(period: $period) { payer { id name } payee { id name } amount { amount currency } adjustment originPeriod }
  network { services { edges { node { id name billedBy { id name } revenue(period: $period) { amount } } } }
            parties { edges { node { id name kind } } } }
}`;
const STATEMENT = `query($party: ID!, $period: String!) {
  statement(partyId: $party, period: $period) { id number status receivable { amount } payable { amount } net { amount } }
}`;

let me = null;

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    me = (await graphql(ME)).me;
  } catch (error) {
    sessionStorage.removeItem(KEY);
    showError(`Sign-in failed: ${error.message}`);
    return;
  }
  showError("");
  $("signin").hidden = true;
  $("session").hidden = false;
  $("content").hidden = false;
  $("who").textContent = `${me.party.name} · ${me.network.name}`;
  const select = $("period");
  select.innerHTML = "";
  for (const period of [...me.network.periods].reverse()) {
    const option = new Option(`${period.key}${period.status === "CLOSED" ? " (closed)" : ""}`, period.key);
    select.add(option);
  }
  await refresh();
  follow();
}

function signOut() {
  sessionStorage.removeItem(KEY);
  if (socket) socket.close();
  location.reload();
}

async function refresh() {
  const period = $("period").value;
  try {
    const data = await graphql(PERIOD, { period });
    drawSankey(data, period);
    await drawStatements(data, period);
    showError("");
  } catch (error) {
    showError(error.message);
  }
}

function drawSankey(data, period) {
  const labels = [];
  const index = new Map();
  const node = (key, label) => {
    if (!index.has(key)) {
      index.set(key, labels.length);
      labels.push(label);
    }
    return index.get(key);
  };
  const source = [], target = [], value = [], text = [];
  const link = (from, to, amount, note) => {
    const number = Number(amount);
    if (number <= 0) return;  // a Sankey draws magnitudes; corrections below zero show in the statements
    source.push(from); target.push(to); value.push(number); text.push(note);
  };
  for (const { node: service } of data.network.services.edges) {
    if (service.revenue && Number(service.revenue.amount) > 0) {
      const consumers = node(`consumers:${service.id}`, `Consumers of ${service.name}`);
      link(consumers, node(service.billedBy.id, service.billedBy.name), service.revenue.amount, service.name);
    }
  }
  for (const flow of data.revenueFlows) {
    const note = flow.adjustment ? `correction of ${flow.originPeriod}` : period;
    link(node(flow.payer.id, flow.payer.name), node(flow.payee.id, flow.payee.name), flow.amount.amount, note);
  }
  $("noflows").hidden = value.length > 0;
  const currency = me.network.currency;
  Plotly.react("sankey", [{
    type: "sankey",
    arrangement: "snap",
    node: { label: labels, pad: 18, thickness: 16 },
    link: { source, target, value, customdata: text, hovertemplate: `%{source.label} → %{target.label}<br>%{value:.2f} ${currency}<br>%{customdata}<extra></extra>` },
  }], { margin: { l: 10, r: 10, t: 10, b: 10 }, font: { size: 13 } }, { displayModeBar: false, responsive: true });
}

async function drawStatements(data, period) {
  const parties = me.party.kind === "OWNER"
    ? data.network.parties.edges.map((edge) => edge.node).filter((party) => party.kind !== "CONSUMER")
    : [me.party];
  const rows = [];
  for (const party of parties) {
    const { statement } = await graphql(STATEMENT, { party: party.id, period });
    if (statement) rows.push({ party, statement });
  }
  const body = $("statements").querySelector("tbody");
  body.innerHTML = "";
  for (const { party, statement } of rows) {
    const row = body.insertRow();
    row.dataset.party = party.name;
    row.insertCell().textContent = party.name;
    row.insertCell().textContent = statement.number || statement.status.toLowerCase();
    for (const amount of [statement.receivable, statement.payable, statement.net]) {
      const cell = row.insertCell();
      cell.className = "money";
      cell.textContent = amount.amount;
    }
    const download = document.createElement("button");
    download.textContent = "CSV";
    download.onclick = () => downloadCsv(statement);
    row.insertCell().append(download);
  }
}

async function downloadCsv(statement) {
  const response = await fetch(`/statements/${encodeURIComponent(statement.id)}.csv`, {
    headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` },
  });
  if (!response.ok) return showError(`Download failed (${response.status})`);
  const url = URL.createObjectURL(await response.blob());
  const anchor = Object.assign(document.createElement("a"), { href: url, download: `${statement.number || "draft"}.csv` });
  anchor.click();
  URL.revokeObjectURL(url);
}

// Live updates: settlementUpdated over the graphql-transport-ws protocol; every message redraws.
function follow() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;
  socket = new WebSocket(url, "graphql-transport-ws");
  socket.onopen = () => socket.send(JSON.stringify({
    type: "connection_init", payload: { authorization: `Bearer ${sessionStorage.getItem(KEY)}` },
  }));
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "connection_ack") {
      $("live").textContent = "● live";
      $("live").className = "on";
      socket.send(JSON.stringify({
        id: "totals", type: "subscribe",
        payload: { query: "subscription { settlementUpdated { period net { amount } } }" },
      }));
    } else if (message.type === "next") {
      refresh();
    } else if (message.type === "ping") {
      socket.send(JSON.stringify({ type: "pong" }));
    } else if (message.type === "error") {
      $("live").textContent = "○ offline";
      $("live").className = "";
      showError(`Live updates: ${message.payload[0].message}`);
    }
  };
  socket.onclose = () => {
    $("live").textContent = "○ offline";
    $("live").className = "";
    if (sessionStorage.getItem(KEY)) setTimeout(follow, 3000);
  };
}

$("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn($("key").value.trim());
});
$("signout").addEventListener("click", signOut);
$("period").addEventListener("change", refresh);
if (sessionStorage.getItem(KEY)) signIn(sessionStorage.getItem(KEY));
