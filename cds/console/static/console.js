// The console's order page: builds the form's request, sends it through the console (which signs it), and
// shows the answer as an EHR would. Everything a service sends is put in the page as text, except card details,
// which the console rendered from Markdown on the server with raw HTML off.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const scenarios = JSON.parse($("#scenario-data").textContent);
let lastService = null; // the service the shown cards came from, for their feedback
let discovered = []; // the services the base URL's discovery lists

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

async function post(path, body) {
  const response = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body), credentials: "same-origin"});
  const data = await response.json().catch(() => ({error: `answered ${response.status}`}));
  if (!response.ok) throw new Error(data.error || (data.issue && data.issue[0].diagnostics) || response.status);
  return data;
}

// ------------------------------------------------------------------------------------------------ the form

// Only http(s) URLs a service sends become links: never javascript:, data: or relative ones.
function webUrl(url) { return typeof url === "string" && /^https?:\/\//i.test(url); }

function pretty(value) { return JSON.stringify(value, null, 2); }

function chooseScenario() {
  const scenario = scenarios.find((s) => s.key === $("#scenario").value);
  if (!scenario) return;
  $("#patient").value = pretty(scenario.patient);
  $("#coverage").value = pretty(scenario.coverage);
  $("#conditions").value = pretty(scenario.conditions);
  showPatientFields();
}

// The quick fields edit the Patient and Conditions JSON in place; the JSON stays what is sent.
function showPatientFields() {
  let patient = null;
  try { patient = JSON.parse($("#patient").value); } catch (error) { return; }
  $("#birth-date").value = (patient && patient.birthDate) || "";
  $("#state").value = (patient && patient.address && patient.address[0] && patient.address[0].state) || "";
}

function editPatient() {
  const patient = readJson("#patient") || {resourceType: "Patient", id: "console-patient"};
  if ($("#birth-date").value) patient.birthDate = $("#birth-date").value; else delete patient.birthDate;
  const state = $("#state").value.trim().toUpperCase();
  patient.address = patient.address && patient.address.length ? patient.address : [{use: "home"}];
  if (state) patient.address[0].state = state; else delete patient.address[0].state;
  $("#patient").value = pretty(patient);
}

function addCondition() {
  const code = $("#condition-code").value.trim();
  if (!code) return;
  const patient = readJson("#patient") || {};
  const bundle = readJson("#conditions") || {resourceType: "Bundle", type: "searchset", entry: []};
  bundle.entry = bundle.entry || [];
  const text = $("#condition-text").value.trim();
  bundle.entry.push({resource: {
    resourceType: "Condition", id: `console-condition-${bundle.entry.length + 1}`,
    clinicalStatus: {coding: [{system: "http://terminology.hl7.org/CodeSystem/condition-clinical", code: "active"}]},
    code: {coding: [{system: "http://hl7.org/fhir/sid/icd-10-cm", code, ...(text ? {display: text} : {})}],
           ...(text ? {text} : {})},
    subject: {reference: `Patient/${patient.id}`},
  }});
  bundle.total = bundle.entry.length;
  $("#conditions").value = pretty(bundle);
  $("#condition-code").value = $("#condition-text").value = "";
}

function addOrder(code = "E0221") {
  const row = $("#order-row").content.firstElementChild.cloneNode(true);
  const choice = $(".o-choice", row);
  const option = code && [...choice.options].find((o) => o.dataset.code === code);
  if (option) choice.value = option.value;
  const fill = () => {
    const option = choice.selectedOptions[0];
    $(".o-type", row).value = option.dataset.type;
    $(".o-system", row).value = option.dataset.system;
    $(".o-code", row).value = option.dataset.code;
    row.dataset.display = option.dataset.display;
  };
  choice.addEventListener("change", fill);
  $(".o-remove", row).addEventListener("click", () => row.remove());
  fill();
  $("#orders").append(row);
  return row;
}

function readJson(id) {
  const text = $(id).value.trim();
  try { return JSON.parse(text || "null"); } catch (error) { throw new Error(`${id.slice(1)}: not JSON (${error.message})`); }
}

// The CRD configuration options the chosen service declares; only values that differ from its defaults are sent.
function configuration() {
  const options = {};
  for (const input of document.querySelectorAll("#options input")) {
    const code = input.dataset.code;
    if (input.type === "checkbox" && input.checked !== (input.dataset.default !== "false")) options[code] = input.checked;
    if (input.type === "number" && input.value !== "") options[code] = Number(input.value);
  }
  return options;
}

function showOptions(service) {
  const declared = (service.extension && service.extension["davinci-crd.configuration-options"]) || [];
  $("#options").replaceChildren(...declared.filter((o) => o && typeof o.code === "string").map((option) => {
    const input = option.type === "boolean"
      ? el("input", {type: "checkbox", id: `opt-${option.code}`, "data-code": option.code,
                     "data-default": String(option.default !== false)})
      : el("input", {type: "number", id: `opt-${option.code}`, "data-code": option.code, min: "0", size: "3",
                     placeholder: option.default === undefined ? "" : String(option.default)});
    if (option.type === "boolean") input.checked = option.default !== false;
    return el("label", {title: option.description || ""}, input, ` ${option.code}`);
  }));
}

function orders() {
  // The service answers about orders by id: console-order-N is the N-th row sent (cds/console/orders.py).
  return [...document.querySelectorAll("#orders .order-row")].map((row, index) => {
    row.dataset.orderId = `console-order-${index + 1}`;
    const code = $(".o-code", row).value;
    return {type: $(".o-type", row).value, system: $(".o-system", row).value, code,
            display: code === $(".o-choice", row).selectedOptions[0].dataset.code ? row.dataset.display : "",
            text: $(".o-text", row).value, selected: $(".o-selected", row).checked};
  });
}

function form() {
  const service = $("#service").selectedOptions[0];
  const common = {target: $("#target").value, service: service.value};
  if ($("#use-raw").checked) return {...common, raw: readJson("#raw")};
  return {...common, hook: service.dataset.hook, patient: readJson("#patient"), coverage: readJson("#coverage"),
          conditions: readJson("#conditions"), orders: orders(), configuration: configuration(),
          requestedVersion: $("#version").value};
}

async function discover() {
  const status = $("#discovery-status");
  try {
    const {answer} = await post("api/discover", {target: $("#target").value});
    if (answer.status !== 200) throw new Error(`${answer.url} answered ${answer.status}`);
    const services = answer.body.services || [];
    discovered = services;
    $("#service").replaceChildren(...services.map((s) => el("option", {value: s.id, "data-hook": s.hook,
                                                                         text: `${s.hook} (${s.id})`})));
    if (services.length) showOptions(services[0]);
    const versions = services.flatMap((s) => (s.extension && s.extension["davinci-crd.version"]) || []);
    $("#version").replaceChildren(el("option", {value: "", text: "(none)"}),
                                  ...[...new Set(versions)].map((v) => el("option", {value: v, text: v})));
    $("#version").value = versions.length ? versions[versions.length - 1] : "";
    status.textContent = `${services.length} service(s) at ${answer.url}`;
  } catch (error) {
    status.textContent = `Discovery failed: ${error.message}`;
  }
}

// ---------------------------------------------------------------------------------------------- the answer

async function send() {
  const status = $("#status");
  let request;
  try { request = form(); } catch (error) { status.textContent = error.message; return; }
  status.textContent = "Sending…";
  try {
    const result = await post("api/send", request);
    const answer = result.answer;
    lastService = {target: request.target, service: request.service};
    $("#request-json").textContent = pretty(result.request);
    $("#response-json").textContent = typeof answer.body === "string" ? answer.body : pretty(answer.body);
    status.textContent = `${answer.status || "no answer"} from ${answer.url} in ${answer.elapsedMs} ms` +
      (answer.signed ? " (signed)" : " (unsigned)");
    status.className = answer.status === 200 ? "status ok" : "status failed";
    showCards(result.view ? result.view.cards : []);
    showCoverage(result.view ? result.view.coverage : []);
  } catch (error) {
    status.textContent = `Not sent: ${error.message}`;
    status.className = "status failed";
  }
}

function showCoverage(rows) {
  // Beside each draft order: what the coverage-information action would record on it.
  document.querySelectorAll("#orders .order-row").forEach((row) => {
    const said = rows.filter((r) => r.order.endsWith(`/${row.dataset.orderId}`));
    $(".o-coverage", row).textContent = said.map((r) => `coverage-information: ${r.covered}` +
      (r["pa-needed"] ? `, ${r["pa-needed"]}` : "") + ` (assertion ${r["coverage-assertion-id"]})`).join("; ");
  });
  const body = $("#coverage-table tbody");
  if (!rows.length) {
    body.replaceChildren(el("tr", {class: "empty"}, el("td", {colspan: "9", text: "No system action."})));
    return;
  }
  body.replaceChildren(...rows.map((row) => el("tr", {"data-order": row.order},
    ...["order", "covered", "pa-needed", "doc-needed", "info-needed", "reason", "coverage",
        "coverage-assertion-id", "date"].map((column) => el("td", {class: `c-${column}`, text: row[column] || ""})))));
}

function showCards(cards) {
  $("#cards").replaceChildren(...(cards.length ? cards.map(cardView)
                                               : [el("p", {class: "note", text: "No cards."})]));
}

function cardView(card) {
  const box = el("article", {class: `card ${card.indicator || "info"}`, "data-uuid": card.uuid || ""});
  const source = card.source || {};
  const label = webUrl(source.url) ? el("a", {href: source.url, target: "_blank", rel: "noopener noreferrer",
                                              text: source.label || source.url})
                                   : el("span", {text: source.label || ""});
  box.append(el("p", {class: "card-head"}, el("span", {class: "indicator", text: card.indicator || ""}), " ", label,
                source.topic ? el("span", {class: "topic", text: ` · ${source.topic.code}`}) : ""),
             el("h3", {class: "summary", text: card.summary || ""}));
  const detail = el("div", {class: "detail"});
  detail.innerHTML = card.detailHtml; // rendered by the console with raw HTML off (cds/console/answer.py)
  box.append(detail);
  if ((card.links || []).length) {
    box.append(el("ul", {class: "links"}, ...card.links.map((link) => el("li", {},
      webUrl(link.url) ? el("a", {href: link.url, target: "_blank", rel: "noopener noreferrer",
                                  text: link.label || link.url}) : el("span", {text: link.label || ""}),
      link.type === "smart" ? " (SMART app)" : ""))));
  }
  const said = el("p", {class: "feedback-status", role: "status"});
  const actions = el("div", {class: "card-actions"});
  for (const suggestion of card.suggestions || []) {
    const button = el("button", {type: "button", class: "suggestion", text: suggestion.label || "Apply"});
    button.addEventListener("click", () => applySuggestion(card, suggestion, box, said));
    actions.append(button);
  }
  const reasons = card.overrideReasons || [];
  const reason = el("select", {class: "override-reason", "aria-label": "Override reason"},
                    ...reasons.map((r, i) => el("option", {value: String(i), text: r.display || r.code})));
  const comment = el("input", {class: "override-comment", placeholder: "comment (optional)", size: "20"});
  const override = el("button", {type: "button", class: "override", text: "Override"});
  override.addEventListener("click", () => sendFeedback(card, box, said, {
    outcome: "overridden",
    overrideReason: reasons.length ? {reason: reasons[Number(reason.value)],
                                      ...(comment.value ? {userComment: comment.value} : {})} : undefined,
  }, "Overridden"));
  const dismiss = el("button", {type: "button", class: "dismiss", text: "Dismiss"});
  dismiss.title = "CDS Hooks: a dismissed card is overridden without a reason";
  dismiss.addEventListener("click", () => sendFeedback(card, box, said, {outcome: "overridden"}, "Dismissed"));
  if (reasons.length) actions.append(reason, comment, override);
  actions.append(dismiss);
  box.append(actions, said);
  return box;
}

async function applySuggestion(card, suggestion, box, said) {
  for (const action of suggestion.actions || []) {
    if (action.type === "delete" && action.resourceId) removeDraft(String(action.resourceId));
  }
  await sendFeedback(card, box, said, {outcome: "accepted", acceptedSuggestions: [suggestion.uuid]},
                     `Applied: ${suggestion.label}`);
}

function removeDraft(resourceId) {
  const id = resourceId.split("/").pop();
  document.querySelectorAll("#orders .order-row").forEach((row) => { if (row.dataset.orderId === id) row.remove(); });
}

async function sendFeedback(card, box, said, entry, done) {
  try {
    const result = await post("api/feedback", {...lastService, card: card.uuid, ...entry});
    $("#feedback-json").textContent = pretty(result.request);
    const ok = result.answer.status === 200;
    said.textContent = ok ? `${done}; feedback sent (${entry.outcome}).`
                          : `Feedback not taken: ${result.answer.status} ${JSON.stringify(result.answer.body)}`;
    if (ok) box.classList.add("answered");
    box.querySelectorAll("button, select, input").forEach((node) => { node.disabled = ok; });
  } catch (error) {
    said.textContent = `Feedback not sent: ${error.message}`;
  }
}

// ------------------------------------------------------------------------------------------------- start

$("#scenario").addEventListener("change", chooseScenario);
const patientStatus = (error) => { $("#status").textContent = error.message; };
for (const id of ["#birth-date", "#state"]) {
  $(id).addEventListener("change", () => { try { editPatient(); } catch (error) { patientStatus(error); } });
}
$("#add-condition").addEventListener("click", () => { try { addCondition(); } catch (error) { patientStatus(error); } });
$("#patient").addEventListener("change", showPatientFields);
$("#add-order").addEventListener("click", () => addOrder(null));
$("#discover").addEventListener("click", discover);
$("#service").addEventListener("change", () => {
  const service = discovered.find((s) => s.id === $("#service").value);
  if (service) showOptions(service);
});
$("#send").addEventListener("click", send);
$("#raw-from-scenario").addEventListener("click", () => {
  const scenario = scenarios.find((s) => s.key === $("#scenario").value);
  if (scenario) $("#raw").value = pretty(scenario.request);
});
chooseScenario();
addOrder();
discover();
