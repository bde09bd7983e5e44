// The map page: draw or type a box (one region, or a grid of cells) or upload regions, pick a date and
// scene, submit, watch the job, show polygons, scores, warnings and the job's files.
"use strict";
const $ = (id) => document.getElementById(id);
const map = L.map("map", { worldCopyJump: true }).setView([20, 0], 2);
L.control.scale().addTo(map);
let box = null, layers = L.layerGroup().addTo(map), drawing = false, start = null;
let uploaded = null;  // the uploaded regions (GeoJSON FeatureCollection from POST /v1/regions), else null
const quicklooks = L.layerGroup().addTo(map);  // the scenes' true colour, before any request
const preview = L.layerGroup().addTo(map);  // the regions a submit would send: grid cells or uploaded polygons
const MAX_CELLS = 400;

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("apikey").value) h["X-API-Key"] = $("apikey").value;
  return h;
}
function setBox(bounds) {
  if (box) map.removeLayer(box);
  box = L.rectangle(bounds, { color: "#06c", weight: 2, fill: false }).addTo(map);
  $("west").value = bounds.getWest().toFixed(5); $("south").value = bounds.getSouth().toFixed(5);
  $("east").value = bounds.getEast().toFixed(5); $("north").value = bounds.getNorth().toFixed(5);
  showPreview();
}
// The box cut into cells of about `km` km a side (degrees from the km at the box's middle latitude; the last
// row and column are clipped to the box); ids r<row>c<col> from the south-west corner.
function gridOf(b, km) {
  const [w, s, e, n] = b, mid = ((s + n) / 2) * Math.PI / 180;
  const dy = km / 110.574, dx = km / (111.320 * Math.max(Math.cos(mid), 0.01));
  const rows = Math.ceil((n - s) / dy - 1e-9), cols = Math.ceil((e - w) / dx - 1e-9);
  if (rows * cols > MAX_CELLS) throw new Error(rows * cols + " cells of " + km + " km; at most " + MAX_CELLS + ": choose larger cells");
  const features = [];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const x0 = w + c * dx, y0 = s + r * dy, x1 = Math.min(x0 + dx, e), y1 = Math.min(y0 + dy, n);
      features.push({ type: "Feature", properties: { region_id: "r" + (r + 1) + "c" + (c + 1) },
        geometry: { type: "Polygon", coordinates: [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]] } });
    }
  }
  return { type: "FeatureCollection", features: features };
}
function boxValues() { return ["west", "south", "east", "north"].map((k) => parseFloat($(k).value)); }
// What a submit sends as its regions: {region: FeatureCollection} (upload or grid) or {bbox: [...]}.
function requestRegions() {
  if (uploaded) return { region: uploaded };
  const b = boxValues();
  if (b.some((x) => isNaN(x))) throw new Error("draw or type a box, or upload regions, first");
  const km = parseFloat($("cellkm").value);
  return km > 0 ? { region: gridOf(b, km) } : { bbox: b };
}
function showPreview() {
  preview.clearLayers(); $("gridinfo").textContent = "";
  try {
    const r = requestRegions();
    if (!r.region) return;
    L.geoJSON(r.region, { style: { color: "#06c", weight: 1, dashArray: "2", fill: false } }).addTo(preview);
    if (!uploaded) $("gridinfo").textContent = r.region.features.length + " regions";
  } catch (e) { if (!uploaded && $("cellkm").value) $("gridinfo").textContent = e.message; }
}
$("cellkm").addEventListener("input", showPreview);
$("regionsfile").addEventListener("change", async () => {
  const file = $("regionsfile").files[0];
  $("error").textContent = ""; $("regionsinfo").textContent = "";
  if (!file) return;
  const form = new FormData(); form.append("file", file);
  const h = {}; if ($("apikey").value) h["X-API-Key"] = $("apikey").value;
  try {
    const r = await fetch("/v1/regions", { method: "POST", headers: h, body: form });
    const body = await r.json().catch(() => ({ error: r.statusText }));
    if (!r.ok) throw new Error(body.error || r.statusText);
    uploaded = body.region;
    $("regionsinfo").textContent = uploaded.features.length + " regions from " + file.name;
    $("clearregions").hidden = false;
    if (box) { map.removeLayer(box); box = null; }
    showPreview();
    map.fitBounds(preview.getLayers()[0].getBounds());
  } catch (e) { uploaded = null; $("regionsfile").value = ""; $("error").textContent = file.name + ": " + e.message; }
});
$("clearregions").onclick = () => {
  uploaded = null; $("regionsfile").value = ""; $("regionsinfo").textContent = ""; $("clearregions").hidden = true;
  const v = boxValues();
  if (v.every((x) => !isNaN(x))) setBox(L.latLngBounds([v[1], v[0]], [v[3], v[2]])); else showPreview();
};
$("draw").onclick = () => {
  if (uploaded) $("clearregions").onclick();  // a drawn box replaces uploaded regions
  drawing = true; map.dragging.disable(); $("status").textContent = "drag a box on the map"; };
map.on("mousedown", (e) => { if (drawing) start = e.latlng; });
map.on("mousemove", (e) => { if (drawing && start) setBox(L.latLngBounds(start, e.latlng)); });
map.on("mouseup", (e) => {
  if (drawing && start) { setBox(L.latLngBounds(start, e.latlng)); drawing = false; start = null; map.dragging.enable(); $("status").textContent = ""; }
});
["west", "south", "east", "north"].forEach((id) => $(id).addEventListener("change", () => {
  const v = boxValues();
  if (v.every((x) => !isNaN(x))) { setBox(L.latLngBounds([v[1], v[0]], [v[3], v[2]])); map.fitBounds(box.getBounds()); }
}));
$("date").value = new Date().toISOString().slice(0, 10);  // until the scenes say otherwise
const WORDS = { 1: "landslide likely", 0: "unlikely" };
const COLOURS = { 1: "#d7301f", 0: "#1a9850" };
function textNode(lines) {  // a popup/tooltip as DOM text, never parsed as HTML
  const div = document.createElement("div");
  for (const line of lines) { const p = document.createElement("div"); p.textContent = line; div.appendChild(p); }
  return div;
}
const p3 = (v) => (v == null ? "" : Number(v).toFixed(3));

async function api(path, options) {
  const r = await fetch(path, Object.assign({ headers: headers() }, options || {}));
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}
async function init() {
  try {
    const h = await api("/healthz");
    $("health").textContent = "models: " + Object.entries(h.models).filter(([, v]) => v).map(([k]) => k).join(", ");
    const s = await api("/v1/scenes");
    // newest first: the date defaults to the newest scene's, so a first request finds imagery
    const scenes = s.scenes.slice().sort((a, b) => String(b.date || "").localeCompare(String(a.date || "")));
    const outlines = L.featureGroup().addTo(map);
    for (const sc of scenes) {
      const o = document.createElement("option");
      o.value = sc.name; o.textContent = sc.name + (sc.date ? " (" + sc.date + ")" : ""); $("scene").appendChild(o);
      if (sc.bbox) {  // what can be assessed, before any request
        const r = L.rectangle([[sc.bbox[1], sc.bbox[0]], [sc.bbox[3], sc.bbox[2]]], { color: "#555", weight: 1, dashArray: "4", fill: false });
        r.bindTooltip(textNode(["scene " + sc.name, sc.date ? "date " + sc.date : "date unknown"])).addTo(outlines);
      }
    }
    // the scenes' true-colour quick-looks under their outlines (the newest few), fetched with the key as a header
    for (const sc of scenes.filter((x) => x.bbox).slice(0, 12)) {
      fetch("/v1/scenes/" + encodeURIComponent(sc.name) + "/quicklook.png", { headers: headers() })
        .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(r.statusText))))
        .then((blob) => {
          L.imageOverlay(URL.createObjectURL(blob), [[sc.bbox[1], sc.bbox[0]], [sc.bbox[3], sc.bbox[2]]], { opacity: 0.85 })
            .addTo(quicklooks).bringToBack();
        })
        .catch(() => {});  // the outline alone still says where the scene is
    }
    if (s.stac_search) {  // offered only when the service was started with a STAC API to search
      const o = document.createElement("option");
      o.value = ""; o.textContent = "search the STAC catalogue (least-cloudy scene before the date)";
      $("scene").appendChild(o);
    }
    if (scenes.length) {
      $("scene").value = scenes[0].name;
      if (scenes[0].date) $("date").value = String(scenes[0].date).slice(0, 10);
      const sc = scenes.find((x) => x.bbox);
      if (sc && !box) {  // start with a small box in the middle of the newest scene
        const cx = (sc.bbox[0] + sc.bbox[2]) / 2, cy = (sc.bbox[1] + sc.bbox[3]) / 2, h = 0.025;
        setBox(L.latLngBounds([cy - h, cx - h], [cy + h, cx + h]));
      }
      if (outlines.getLayers().length) map.fitBounds(outlines.getBounds());
    } else if (!s.stac_search) {
      $("status").textContent = "This service has no scenes to assess yet; ask whoever runs it to add a scenes folder.";
      $("submit").disabled = true;
    }
  } catch (e) { $("error").textContent = e.message; }
}
$("submit").onclick = async () => {
  $("error").textContent = ""; layers.clearLayers(); $("polygons").className = ""; document.querySelector("#scores tbody").replaceChildren();
  $("files").replaceChildren(); $("warnings").replaceChildren();
  let req;
  try { req = Object.assign(requestRegions(), { date: $("date").value }); } catch (e) { $("error").textContent = e.message; return; }
  if ($("scene").value) req.scene = $("scene").value;  // "" is the STAC search: the service's own catalogue
  try {
    const { job_id } = await api("/v1/assess", { method: "POST", body: JSON.stringify(req) });
    $("progress").hidden = false; poll(job_id);
  } catch (e) { $("error").textContent = e.message; }
};
async function poll(id) {
  try {
    const j = await api("/v1/jobs/" + id);
    $("progress").value = j.progress || 0; $("status").textContent = j.status + ": " + (j.message || "");
    if (j.status === "done") return show(id, j);
    if (j.status === "failed" || j.status === "interrupted") { $("error").textContent = j.message; return; }
    setTimeout(() => poll(id), 1000);
  } catch (e) { $("error").textContent = e.message; }
}
function show(id, job) {
  const res = job.result || {};
  if (job.files["scene_rgb.png"] && res.scene_bounds) {
    const b = res.scene_bounds;
    fetch(job.files["scene_rgb.png"], { headers: headers() })  // the API key travels as a header, never in a URL
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error("scene_rgb.png: " + r.statusText))))
      .then((blob) => { L.imageOverlay(URL.createObjectURL(blob), [[b[1], b[0]], [b[3], b[2]]], { opacity: 0.9 }).addTo(layers).bringToBack(); })
      .catch((e) => { $("error").textContent = e.message; });
  }
  const word = (d) => (d == null ? "unknown: no evidence" : WORDS[d] || String(d));
  const byId = {};
  const regions = L.geoJSON(res.regions, {
    style: (f) => ({ color: COLOURS[f.properties.decision] || "#969696", weight: 2, fillOpacity: 0.1 }),
    onEachFeature: (f, l) => {
      const p = f.properties; byId[p.region_id] = l;
      l.bindPopup(textNode(["region " + p.region_id, word(p.decision), "p_fused " + p3(p.p_fused),
        "p_tabular " + p3(p.p_tabular), "p_imagery " + p3(p.p_imagery), p.reason || ""]));
    } }).addTo(layers);
  L.geoJSON(res.landslides, { style: { color: "#000", weight: 1, fillColor: "#ffd92f", fillOpacity: 0.75 },
    onEachFeature: (f, l) => l.bindPopup(textNode(["landslide", Math.round(f.properties.area_m2) + " m²"])) }).addTo(layers);
  map.fitBounds(regions.getBounds());
  const tbody = document.querySelector("#scores tbody");
  const rows = res.regions.features.slice().sort((a, b) => (b.properties.p_fused ?? -1) - (a.properties.p_fused ?? -1));
  for (const f of rows) {
    const p = f.properties, tr = document.createElement("tr");
    const cells = [p.region_id, p3(p.p_fused), word(p.decision), p.agree == null ? "" : (p.agree ? "yes" : "no"),
      p.evidence, p.reason, p.top_features || ""];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      if (i === 0 && byId[p.region_id]) {  // the id shows its polygon on the map
        const a = document.createElement("a"); a.href = "#map"; a.textContent = c;
        a.addEventListener("click", (e) => { e.preventDefault(); map.fitBounds(byId[p.region_id].getBounds()); byId[p.region_id].openPopup(); });
        td.appendChild(a);
      } else td.textContent = c == null ? "" : c;
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
  }
  const seen = new Set();  // the job's warnings (those at the top of report.html), each once
  for (const w of [].concat(res.warnings || [], res.scene_notes || [])) {
    const text = typeof w === "string" ? w : (w.message || JSON.stringify(w));
    if (seen.has(text)) continue;
    seen.add(text);
    const li = document.createElement("li"); li.textContent = text; $("warnings").appendChild(li);
  }
  for (const [name, path] of Object.entries(job.files || {})) {  // downloads carry the API key as a header
    const a = document.createElement("a"); a.href = path; a.textContent = name; a.download = name;
    a.addEventListener("click", async (e) => {
      e.preventDefault();
      try {
        const r = await fetch(path, { headers: headers() });
        if (!r.ok) throw new Error(name + ": " + r.statusText);
        const url = URL.createObjectURL(await r.blob());
        const tmp = document.createElement("a"); tmp.href = url; tmp.download = name; document.body.appendChild(tmp); tmp.click();
        setTimeout(() => { URL.revokeObjectURL(url); tmp.remove(); }, 0);
      } catch (err) { $("error").textContent = err.message; }
    });
    const li = document.createElement("li"); li.appendChild(a); $("files").appendChild(li);
  }
  $("polygons").textContent = res.landslides.features.length + " landslide polygon(s)";
  $("polygons").className = "done";
}
init();
