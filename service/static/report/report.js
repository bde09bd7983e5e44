// The assessment report's behaviour: the map, the sortable table and the CSV download.
// Every value from the data is set as text (textContent, DOM nodes): nothing is parsed as HTML.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);

  function fmt(v, digits) {
    if (v === null || v === undefined || v === "") return "";
    if (typeof v === "number") return Number.isFinite(v) ? v.toFixed(digits === undefined ? 3 : digits) : "";
    return String(v);
  }

  function popup(title, lines) {
    const div = document.createElement("div");
    div.className = "popup";
    const h = document.createElement("b");
    h.textContent = title;
    div.appendChild(h);
    for (const [k, v] of lines) {
      if (v === "" || v === null || v === undefined) continue;
      const p = document.createElement("div");
      p.textContent = k + ": " + v;
      div.appendChild(p);
    }
    return div;
  }

  function withThreshold(p, thr) {
    if (p === null || p === undefined) return "no evidence";
    return fmt(p) + (thr === null || thr === undefined ? "" : " (threshold " + fmt(thr) + ")");
  }

  // ---------------------------------------------------------------- the map
  if (typeof L !== "undefined" && document.getElementById("map")) {
    const map = L.map("map");
    L.control.scale().addTo(map);
    const b = data.bounds;
    if (b && data.image) L.imageOverlay(data.image, [[b[1], b[0]], [b[3], b[2]]]).addTo(map);
    const thr = data.thresholds || {};
    const regions = L.geoJSON(data.regions, {
      style: (f) => {
        const c = (data.decision_colours || {})[f.properties._decision_key] || "#333";
        return {color: c, weight: 2.5, fillColor: c, fillOpacity: 0.12};
      },
      onEachFeature: (f, layer) => {
        const p = f.properties;
        layer.bindPopup(popup("region " + fmt(p.region_id), [
          ["decision", p._decision_label],
          ["p_fused", withThreshold(p.p_fused, thr.fused)],
          ["p_tabular", withThreshold(p.p_tabular, thr.tabular)],
          ["p_imagery", withThreshold(p.p_imagery, thr.imagery)],
          ["evidence", fmt(p.evidence)],
          ["reason", fmt(p.reason)],
          ["change evidence", fmt(p.change)],
          ["note", fmt(p.note)],
        ]));
      },
    }).addTo(map);
    const conf = data.confidence_colours || {};
    L.geoJSON(data.landslides, {
      style: (f) => {
        const c = conf[f.properties.confidence] || data.landslide_colour;
        return {color: "#000", weight: 1, fillColor: c, fillOpacity: 0.75};
      },
      onEachFeature: (f, layer) => {
        const p = f.properties;
        layer.bindPopup(popup("landslide", [
          ["confidence", fmt(p.confidence)],
          ["region", fmt(p.region_id)],
          ["area", p.area_m2 === undefined ? "" : Math.round(p.area_m2).toLocaleString("en") + " m²"],
          ["mean probability", fmt(p.mean_prob)],
          ["max probability", fmt(p.max_prob)],
        ]));
      },
    }).addTo(map);
    const rb = regions.getBounds();
    map.fitBounds(rb.isValid() ? rb : [[b[1], b[0]], [b[3], b[2]]]);
  }

  // ---------------------------------------------------------------- sorting
  const table = document.getElementById("scores");
  if (table) {
    const body = table.tBodies[0];
    const heads = Array.from(table.tHead.rows[0].cells);
    heads.forEach((th, col) => {
      const button = th.querySelector("button");
      if (!button) return;
      button.addEventListener("click", () => {
        const asc = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        const rows = Array.from(body.rows);
        const key = (r) => r.cells[col].dataset.v;
        const numeric = rows.every((r) => key(r) === "" || !Number.isNaN(Number(key(r))));
        rows.sort((a, b) => {
          const x = key(a), y = key(b);
          if (x === "" && y === "") return 0;
          if (x === "") return 1; // empty last, whatever the direction
          if (y === "") return -1;
          const d = numeric ? Number(x) - Number(y) : x.localeCompare(y, "en", {numeric: true});
          return asc ? d : -d;
        });
        rows.forEach((r) => body.appendChild(r));
      });
    });
  }

  // ---------------------------------------------------------------- CSV download
  function csvCell(v) {
    if (v === null || v === undefined) return "";
    let s = typeof v === "number" ? String(v) : String(v);
    if (typeof v !== "number" && /^[=+\-@\t\r]/.test(s)) s = "'" + s; // no formulas in a spreadsheet
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  const csvButton = document.getElementById("csv");
  if (csvButton) {
    csvButton.addEventListener("click", () => {
      const cols = data.csv_columns;
      const lines = [cols.map(csvCell).join(",")];
      for (const row of data.rows) lines.push(cols.map((c) => csvCell(row[c])).join(","));
      const blob = new Blob([lines.join("\r\n") + "\r\n"], {type: "text/csv"});
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = data.csv_name || "regions.csv";
      document.body.appendChild(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 0);
    });
  }
})();
