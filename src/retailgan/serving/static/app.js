// Merchandiser page: plain JS against the service's own API (no build step). Every value from
// the API is inserted with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const session = new Map(); // product id -> title

function key() {
  return $("api-key").value.trim();
}

function setStatus(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

async function api(path, options = {}) {
  const headers = { "X-API-Key": key(), ...(options.body ? { "Content-Type": "application/json" } : {}) };
  const resp = await fetch(path, { ...options, headers });
  let data = null;
  try {
    data = await resp.json();
  } catch (e) {
    data = null;
  }
  if (!resp.ok) {
    const detail = data && data.detail ? data.detail : resp.statusText;
    throw new Error(`${resp.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return data;
}

function el(tag, attrs = {}, text = null) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== null) e.textContent = text;
  return e;
}

// A generated stand-in picture (initials on a colour from the id), labelled as such on the card.
function placeholder(id, title) {
  let h = 0;
  for (const c of id) h = Math.imul(h ^ c.charCodeAt(0), 2654435761) >>> 0;
  const hue = h % 360;
  const words = (title || id).split(/\s+/).filter(Boolean);
  const initials = words.slice(0, 2).map((w) => w[0]).join("").toUpperCase().replace(/[^A-Z0-9]/g, "") || "?";
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="200" height="120">` +
    `<rect width="200" height="120" fill="hsl(${hue},55%,72%)"/>` +
    `<text x="100" y="72" font-family="sans-serif" font-size="40" text-anchor="middle" fill="#fff">${initials}</text>` +
    `</svg>`;
  return "data:image/svg+xml;charset=utf-8," + encodeURIComponent(svg);
}

function money(p) {
  return p === null || p === undefined ? "price n/a" : `£${p.toFixed(2)}`;
}

function renderSession() {
  const box = $("session");
  box.replaceChildren();
  for (const [id, title] of session) {
    const chip = el("span", { class: "chip", title: "click to remove", "data-product": id }, `${title || id} ✕`);
    chip.onclick = () => {
      session.delete(id);
      renderSession();
    };
    box.append(chip);
  }
}

function addToSession(id, title) {
  session.set(id, title);
  renderSession();
}

function renderResults(data, title) {
  $("results-title").textContent = title;
  $("model").textContent = `model: ${data.model_version}`;
  const grid = $("results");
  grid.replaceChildren();
  for (const item of data.items) {
    const card = el("div", { class: "card", "data-testid": "rec", "data-product": item.product_id });
    const img = el("img", { alt: item.title || item.product_id });
    img.src = item.image_url || placeholder(item.product_id, item.title);
    const body = el("div", { class: "body" });
    // Generated images are labelled twice: stamped on the picture by the server, and here in words.
    const kind = !item.image_url ? "no image: placeholder" : item.image_generated ? "generated image" : "photo";
    body.append(el("div", { class: item.image_generated ? "label generated" : "label", "data-testid": "image-kind" }, kind));
    body.append(el("div", { class: "title" }, `${item.rank}. ${item.title || item.product_id}`));
    const meta = el("div", { class: "meta" });
    meta.append(el("span", { "data-testid": "price" }, money(item.price)));
    meta.append(el("span", {}, `score ${item.score.toFixed(3)}`));
    body.append(meta);
    const reasons = el("ul", { "data-testid": "reasons" });
    for (const r of item.reasons || []) reasons.append(el("li", {}, r.text));
    body.append(reasons);
    card.append(img, body);
    card.title = "click to add to the session";
    card.onclick = () => addToSession(item.product_id, item.title);
    grid.append(card);
  }
  const notes = data.notes && data.notes.length ? ` ${data.notes.join(" ")}` : "";
  setStatus(`${data.items.length} products · strategy: ${data.strategy} · history: ${data.history_size}.${notes}`);
}

function requestBody(extra) {
  const body = { k: Math.max(1, Math.min(100, parseInt($("k").value, 10) || 12)), explain: true, ...extra };
  const filters = {};
  const cat = $("category").value.trim();
  if (cat) filters.categories = [cat];
  const price = parseFloat($("max-price").value);
  if (!Number.isNaN(price)) filters.max_price = price;
  if (Object.keys(filters).length) body.filters = filters;
  const variety = parseFloat($("diversity").value);
  if (!Number.isNaN(variety) && variety > 0) {
    body.diversity = Math.min(1, variety);
    body.diversify = $("diversify").value;
  }
  return body;
}

async function recommendCustomer() {
  const id = $("customer-id").value.trim() || $("customer-select").value;
  if (!id) return setStatus("Pick or type a customer id.", true);
  setStatus("Loading…");
  try {
    const data = await api("/v1/recommendations", { method: "POST", body: JSON.stringify(requestBody({ customer_id: id })) });
    renderResults(data, `Recommendations for customer ${id}`);
    await loadHistory(id);
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function recommendSession() {
  if (!session.size) return setStatus("Add products to the session first (search, or click a recommendation).", true);
  setStatus("Loading…");
  try {
    const body = requestBody({ product_ids: [...session.keys()] });
    const data = await api("/v1/recommendations", { method: "POST", body: JSON.stringify(body) });
    renderResults(data, `Recommendations for a session of ${session.size} product(s)`);
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function loadHistory(id) {
  const list = $("history");
  list.replaceChildren();
  try {
    const data = await api(`/v1/customers/${encodeURIComponent(id)}/history?limit=30`);
    for (const ev of data.events) {
      const li = el("li", {}, `${ev.event_type}: ${ev.title || ev.product_id}`);
      li.onclick = () => addToSession(ev.product_id, ev.title);
      list.append(li);
    }
  } catch (e) {
    list.append(el("li", {}, e.message));
  }
}

async function search() {
  const list = $("search-results");
  list.replaceChildren();
  try {
    const q = encodeURIComponent($("search").value.trim());
    const data = await api(`/v1/products?limit=30${q ? `&query=${q}` : ""}`);
    for (const p of data.items) {
      const li = el("li", { "data-product": p.product_id }, `${p.title || p.product_id} · ${money(p.price)}`);
      li.onclick = () => addToSession(p.product_id, p.title);
      list.append(li);
    }
    if (!data.items.length) list.append(el("li", {}, "no products found"));
  } catch (e) {
    setStatus(e.message, true);
  }
}

async function loadCustomers() {
  try {
    const data = await api("/v1/customers?limit=50");
    const select = $("customer-select");
    select.replaceChildren(el("option", { value: "" }, "choose a customer…"));
    for (const c of data.items) select.append(el("option", { value: c.customer_id }, `${c.customer_id} (${c.products} products)`));
    setStatus("Pick a customer or build a session.");
  } catch (e) {
    setStatus(e.message, true);
  }
}

function init() {
  const saved = localStorage.getItem("retailgan-api-key");
  if (saved) $("api-key").value = saved;
  $("api-key").addEventListener("change", () => {
    localStorage.setItem("retailgan-api-key", key());
    loadCustomers();
    search();
  });
  $("customer-go").onclick = recommendCustomer;
  $("customer-select").onchange = () => {
    $("customer-id").value = "";
    recommendCustomer();
  };
  $("session-go").onclick = recommendSession;
  $("session-clear").onclick = () => {
    session.clear();
    renderSession();
  };
  $("search-go").onclick = search;
  $("search").addEventListener("keydown", (e) => {
    if (e.key === "Enter") search();
  });
  if (key()) {
    loadCustomers();
    search();
  }
}

init();
