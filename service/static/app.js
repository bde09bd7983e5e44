// The map page: draw or type a box, pick a date and scene, submit, watch the job, show polygons and scores.
"use strict";
const $ = (id) => document.getElementById(id);
const map = L.map("map", { worldCopyJump: true }).setView([20, 0], 2);
L.control.scale().addTo(map);
let box = null, layers = L.layerGroup().addTo(map), drawing = false, start = null;

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
}
$("draw").onclick = () => { drawing = true; map.dragging.disable(); $("status").textContent = "drag a box on the map"; };
map.on("mousedown", (e) => { if (drawing) start = e.latlng; });
map.on("mousemove", (e) => { if (drawing && start) setBox(L.latLngBounds(start, e.latlng)); });
map.on("mouseup", (e) => {
  if (drawing && start) { setBox(L.latLngBounds(start, e.latlng)); drawing = false; start = null; map.dragging.enable(); $("status").textContent = ""; }
});
["west", "south", "east", "north"].forEach((id) => $(id).addEventListener("change", () => {
  const v = ["west", "south", "east", "north"].map((k) => parseFloat($(k).value));
  if (v.every((x) => !isNaN(x))) { setBox(L.latLngBounds([v[1], v[0]], [v[3], v[2]])); map.fitBounds(box.getBounds()); }
}));
$("date").value = new Date().toISOString().slice(0, 10);

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
    for (const sc of s.scenes) {
      const o = document.createElement("option"); o.value = sc.name; o.textContent = sc.name; $("scene").appendChild(o);
      if (sc.bbox && !box) {  // start with a small box in the middle of the first scene
        const cx = (sc.bbox[0] + sc.bbox[2]) / 2, cy = (sc.bbox[1] + sc.bbox[3]) / 2, h = 0.025;
        setBox(L.latLngBounds([cy - h, cx - h], [cy + h, cx + h]));
        map.fitBounds(L.latLngBounds([sc.bbox[1], sc.bbox[0]], [sc.bbox[3], sc.bbox[2]]));
      }
    }
    if (s.scenes.length) $("scene").value = s.scenes[0].name;
  } catch (e) { $("error").textContent = e.message; }
}
$("submit").onclick = async () => {
  $("error").textContent = ""; layers.clearLayers(); document.querySelector("#scores tbody").innerHTML = "";
  const bbox = ["west", "south", "east", "north"].map((k) => parseFloat($(k).value));
  if (bbox.some((x) => isNaN(x))) { $("error").textContent = "draw or type a box first"; return; }
  const req = { bbox: bbox, date: $("date").value };
  if ($("scene").value) req.scene = $("scene").value;
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
    // the key goes in the header only (never the URL): the image is fetched and shown from a blob URL
    fetch(job.files["scene_rgb.png"], { headers: headers() }).then((r) => (r.ok ? r.blob() : null)).then((blob) => {
      if (blob) L.imageOverlay(URL.createObjectURL(blob), [[b[1], b[0]], [b[3], b[2]]], { opacity: 0.9 }).addTo(layers);
    });
  }
  const regions = L.geoJSON(res.regions, { style: { color: "#06c", weight: 2, fill: false } }).addTo(layers);
  const polys = L.geoJSON(res.landslides, { style: { color: "#d00", weight: 1, fillOpacity: 0.4 },
    onEachFeature: (f, l) => l.bindPopup("area " + Math.round(f.properties.area_m2) + " m²") }).addTo(layers);
  map.fitBounds(regions.getBounds());
  const tbody = document.querySelector("#scores tbody");
  for (const f of res.regions.features) {
    const p = f.properties, tr = document.createElement("tr");
    const cells = [p.region_id, p.p_fused == null ? "" : p.p_fused.toFixed(3), p.decision == null ? "unknown" : p.decision,
      p.agree == null ? "" : p.agree, p.evidence, p.reason, p.top_features || ""];
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
    tbody.appendChild(tr);
  }
  $("polygons").textContent = res.landslides.features.length + " landslide polygon(s)";
  $("polygons").className = "done";
}
init();
