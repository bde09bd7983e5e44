// A minimal DOM and Leaflet stand-in: runs report.js as the page would and prints what it did.
const fs = require("fs");
const input = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const created = [];
function el(tag) {
  const e = {tag, children: [], textContent: "", className: "", dataset: {}, listeners: {}, attrs: {},
    appendChild(c) { const i = this.children.indexOf(c); if (i >= 0) this.children.splice(i, 1); this.children.push(c); return c; },
    addEventListener(k, f) { this.listeners[k] = f; },
    setAttribute(k, v) { this.attrs[k] = v; }, getAttribute(k) { return this.attrs[k] ?? null; },
    removeAttribute(k) { delete this.attrs[k]; }, click() { (this.listeners.click || (() => {}))(); },
    remove() {}, querySelector() { return this.button || null; }};
  Object.defineProperty(e, "innerHTML", {set() { throw new Error("innerHTML used"); }});
  created.push(e);
  return e;
}
const body = el("tbody");
for (const r of input.rows) { const tr = el("tr"); tr.cells = r.map((v) => { const td = el("td"); td.dataset.v = v; return td; }); body.appendChild(tr); }
Object.defineProperty(body, "rows", {get() { return this.children; }});
const heads = input.rows[0].map(() => { const th = el("th"); th.button = el("button"); return th; });
const table = {tBodies: [body], tHead: {rows: [{cells: heads}]}};
const csv = el("button");
const ids = {"report-data": {textContent: input.data}, map: el("div"), scores: table, csv};
global.document = {getElementById: (id) => ids[id], createElement: el, body: el("body")};
const popups = [];
let blob = null;
global.Blob = class { constructor(parts) { blob = parts.join(""); } };
global.URL = {createObjectURL: () => "blob:x", revokeObjectURL() {}};
const layer = () => ({addTo() { return this; }, getBounds: () => ({isValid: () => true})});
global.L = {map: () => ({fitBounds() {}}), control: {scale: layer}, imageOverlay: layer,
  geoJSON: (fc, opts) => { for (const f of fc.features) { opts.style(f);
    opts.onEachFeature(f, {bindPopup: (c) => popups.push(c)}); } return layer(); }};
require(process.argv[3]);
const text = (n) => n.textContent + n.children.map(text).join("|");
heads[Number(process.argv[4])].button.click();
const order = body.children.map((tr) => tr.cells[0].dataset.v);
csv.click();
console.log(JSON.stringify({popups: popups.map((p) => typeof p === "string" ? "STRING:" + p : text(p)), order, csv: blob}));
