// Ganglion gateway dashboard: plain ES2020, no framework, no build step.
//
// Data: GET /v1/network once (a snapshot), then EventSource('/v1/events') with one
// `event: snapshot` per ~500 ms carrying the same JSON. Everything updates in place: the countries
// are drawn once; markers, table rows and histogram bars are keyed and patched.
'use strict';

(() => {
  const SVGNS = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);
  const STATE_RANK = { active: 0, standby: 1, spare: 2, idle: 3, down: 4 };
  const STALE_MS = 3000;

  // ---------------------------------------------------------------------------------------------
  // Formatting
  const nf = new Intl.NumberFormat('en-US');
  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  const fmtInt = (v) => (isNum(v) ? nf.format(Math.round(v)) : '—');

  // Micro-tokens as tokens with 6 decimals (1 token = 1,000,000 micro), exact for integers.
  function fmtTokens(micro) {
    if (!isNum(micro)) return '—';
    const m = Math.round(Math.abs(micro));
    const whole = Math.floor(m / 1e6);
    const frac = m - whole * 1e6;
    return (micro < 0 ? '-' : '') + nf.format(whole) + '.' + String(frac).padStart(6, '0');
  }

  // Truncated, not rounded: 99.96% must not read as 100.0%.
  function fmtPct(rate) {
    if (!isNum(rate)) return '—';
    return (Math.floor(rate * 1000 + 1e-6) / 10).toFixed(1) + '%';
  }

  function fmtMs(v) {
    if (!isNum(v)) return '—';
    return (v < 100 ? v.toFixed(1) : Math.round(v).toString()) + ' ms';
  }

  function fmtUptime(ms) {
    if (!isNum(ms)) return '—';
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const p = (n) => String(n).padStart(2, '0');
    if (d) return `${d}d ${p(h)}h ${p(m)}m`;
    if (h) return `${h}h ${p(m)}m ${p(s)}s`;
    if (m) return `${m}m ${p(s)}s`;
    return `${s}s`;
  }

  function fmtCompact(n) {
    if (n < 1000) return String(n);
    if (n < 1e6) return (n / 1e3).toFixed(n < 1e4 ? 1 : 0) + 'k';
    return (n / 1e6).toFixed(n < 1e7 ? 1 : 0) + 'M';
  }

  function fmtBound(b) {
    return b >= 1000 ? `${+(b / 1000).toFixed(2)}s` : `${b}`;
  }

  function shortDid(id) {
    if (typeof id !== 'string') return '—';
    if (id.length <= 20) return id;
    const prefix = id.startsWith('did:key:') ? 'did:key:' : '';
    return prefix + '…' + id.slice(-8);
  }

  function fmtLatLon(lat, lon) {
    if (!isNum(lat) || !isNum(lon)) return '—';
    return `${Math.abs(lat).toFixed(2)}°${lat >= 0 ? 'N' : 'S'} ${Math.abs(lon).toFixed(2)}°${lon >= 0 ? 'E' : 'W'}`;
  }

  const placeOf = (o) => o.city || fmtLatLon(o.lat, o.lon);

  // ---------------------------------------------------------------------------------------------
  // DOM helpers
  function svg(tag, attrs) {
    const el = document.createElementNS(SVGNS, tag);
    if (attrs) for (const k in attrs) el.setAttribute(k, attrs[k]);
    return el;
  }
  function h(tag, cls, text) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined) el.textContent = text;
    return el;
  }
  function setText(el, s) {
    if (el && el.textContent !== s) el.textContent = s;
  }
  function setAttr(el, k, v) {
    v = String(v);
    if (el.getAttribute(k) !== v) el.setAttribute(k, v);
  }
  function setClass(el, cls) {
    if (el.getAttribute('class') !== cls) el.setAttribute('class', cls);
  }

  // Keyed reconciliation: creates, updates, removes and orders `parent`'s children after `items`.
  function reconcile(parent, cache, items, keyOf, create, update) {
    const seen = new Set();
    items.forEach((it, i) => {
      const k = keyOf(it, i);
      seen.add(k);
      let el = cache.get(k);
      if (!el) {
        el = create(it);
        cache.set(k, el);
      }
      update(el, it);
      if (parent.children[i] !== el) parent.insertBefore(el, parent.children[i] || null);
    });
    for (const [k, el] of cache) {
      if (!seen.has(k)) {
        el.remove();
        cache.delete(k);
      }
    }
  }

  // ---------------------------------------------------------------------------------------------
  // TopoJSON: quantized, delta-encoded arcs; a negative index ~i means arc i reversed.
  function decodeArcs(topo) {
    const t = topo.transform;
    return topo.arcs.map((arc) => {
      if (!t) return arc.map((p) => [p[0], p[1]]);
      const [sx, sy] = t.scale;
      const [tx, ty] = t.translate;
      let x = 0;
      let y = 0;
      return arc.map((p) => {
        x += p[0];
        y += p[1];
        return [x * sx + tx, y * sy + ty];
      });
    });
  }

  function ringPoints(arcs, indices) {
    const pts = [];
    for (const i of indices) {
      const arc = i < 0 ? arcs[~i].slice().reverse() : arcs[i];
      // Consecutive arcs share their joining point: keep it once.
      for (let k = pts.length ? 1 : 0; k < arc.length; k++) pts.push(arc[k]);
    }
    return pts;
  }

  // world-atlas v2 geometries are stitched across the antimeridian (made for spherical
  // clipping). On a plane: unwrap each ring's longitudes so it has no 360° jumps, close a ring
  // that goes round a pole along that pole, and add a copy shifted by 360° for whatever spills
  // past ±180 (the countries layer is clipped to the world rectangle).
  function planarRings(pts) {
    if (pts.length < 2) return [];
    let off = 0;
    let latSum = 0;
    const out = [[pts[0][0], pts[0][1]]];
    for (let k = 1; k < pts.length; k++) {
      const dx = pts[k][0] - pts[k - 1][0];
      if (dx > 180) off -= 360;
      else if (dx < -180) off += 360;
      out.push([pts[k][0] + off, pts[k][1]]);
      latSum += pts[k][1];
    }
    if (off !== 0) {
      const pole = latSum / (pts.length - 1) < 0 ? -90 : 90;
      out.push([out[out.length - 1][0], pole], [out[0][0], pole]);
    }
    let minX = Infinity, maxX = -Infinity;
    for (const p of out) { minX = Math.min(minX, p[0]); maxX = Math.max(maxX, p[0]); }
    const rings = [out];
    if (maxX > 180) rings.push(out.map((p) => [p[0] - 360, p[1]]));
    if (minX < -180) rings.push(out.map((p) => [p[0] + 360, p[1]]));
    return rings;
  }

  // Path in unscaled equirectangular units: x = lon, y = -lat (the map group scales x).
  function ringPath(pts) {
    let d = '';
    let last = '';
    for (let k = 0; k < pts.length; k++) {
      const xy = `${+pts[k][0].toFixed(2)},${+(-pts[k][1]).toFixed(2)}`;
      if (xy === last) continue;
      d += (d ? 'L' : 'M') + xy;
      last = xy;
    }
    return d ? d + 'Z' : '';
  }

  function geometryPath(arcs, g) {
    const polys = g.type === 'Polygon' ? [g.arcs] : g.type === 'MultiPolygon' ? g.arcs : [];
    let d = '';
    for (const rings of polys) {
      for (const r of rings) for (const ring of planarRings(ringPoints(arcs, r))) d += ringPath(ring);
    }
    return d;
  }

  function countriesOf(topo) {
    const arcs = decodeArcs(topo);
    const obj = topo.objects.countries || Object.values(topo.objects)[0];
    return obj.geometries
      .map((g) => ({ id: g.id, name: (g.properties && g.properties.name) || '', d: geometryPath(arcs, g) }))
      .filter((c) => c.d);
  }

  // ---------------------------------------------------------------------------------------------
  // Map
  const map = {
    el: $('map'),
    world: $('map-world'),
    countries: $('map-countries'),
    graticule: $('map-graticule'),
    links: $('map-links'),
    markers: $('map-markers'),
    status: $('map-status'),
    view: null, // {x, y, w, h, kx}
    kx: 1,
    layers: {},
    markerCache: { p: new Map(), r: new Map(), g: new Map() },
    linkCache: new Map(),
  };
  const ASPECT = 16 / 10; // matches #map's CSS aspect-ratio
  const MIN_SPAN = 25; // degrees

  for (const name of ['providers', 'robots', 'gateway']) {
    map.layers[name] = svg('g', { class: `layer-${name}` });
    map.markers.appendChild(map.layers[name]);
  }

  function drawGraticule() {
    let d = '';
    for (let lon = -180; lon <= 180; lon += 10) d += `M${lon},-90V90`;
    for (let lat = -80; lat <= 80; lat += 10) d += `M-180,${-lat}H180`;
    map.graticule.appendChild(svg('path', { class: 'graticule', d }));
  }

  async function loadCountries() {
    try {
      const res = await fetch('/countries-110m.json');
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const topo = await res.json();
      const frag = document.createDocumentFragment();
      for (const c of countriesOf(topo)) {
        const p = svg('path', { class: 'country', d: c.d, 'fill-rule': 'evenodd' });
        if (c.id !== undefined) p.setAttribute('data-id', c.id);
        const t = svg('title');
        t.textContent = c.name;
        p.appendChild(t);
        frag.appendChild(p);
      }
      map.countries.appendChild(frag);
      setText(map.status, 'Natural Earth 1:110m · equirectangular');
    } catch (e) {
      setText(map.status, 'map unavailable');
      console.error('dashboard: could not load the world map:', e);
    }
  }

  const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

  // The view that fits all points with a margin, at least MIN_SPAN degrees, in the map's aspect.
  function fitView(points) {
    const pts = points.filter((p) => isNum(p.lat) && isNum(p.lon));
    if (!pts.length) return { x: -180, y: -90, w: 360, h: 180 * 1, kx: 1 };
    let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
    for (const p of pts) {
      minLat = Math.min(minLat, p.lat); maxLat = Math.max(maxLat, p.lat);
      minLon = Math.min(minLon, p.lon); maxLon = Math.max(maxLon, p.lon);
    }
    // Equirectangular with its standard parallel at the middle of the points: less stretched.
    const kx = clamp(Math.cos(((minLat + maxLat) / 2) * Math.PI / 180), 0.5, 1);
    let x0 = minLon * kx, x1 = maxLon * kx, y0 = -maxLat, y1 = -minLat;
    const padX = Math.max((x1 - x0) * 0.18, 4);
    const padY = Math.max((y1 - y0) * 0.18, 4);
    x0 -= padX; x1 += padX; y0 -= padY; y1 += padY;
    let w = x1 - x0, h = y1 - y0;
    if (w < MIN_SPAN) { x0 -= (MIN_SPAN - w) / 2; w = MIN_SPAN; }
    if (h < MIN_SPAN) { y0 -= (MIN_SPAN - h) / 2; h = MIN_SPAN; }
    if (w / h < ASPECT) { const nw = h * ASPECT; x0 -= (nw - w) / 2; w = nw; }
    else { const nh = w / ASPECT; y0 -= (nh - h) / 2; h = nh; }
    // Stay inside the world where the view is smaller than it.
    const WX = -180 * kx, WW = 360 * kx, WY = -90, WH = 180;
    x0 = w >= WW ? WX - (w - WW) / 2 : clamp(x0, WX, WX + WW - w);
    y0 = h >= WH ? WY - (h - WH) / 2 : clamp(y0, WY, WY + WH - h);
    return { x: x0, y: y0, w, h, kx };
  }

  function sameView(a, b) {
    if (!a || !b) return false;
    const tol = Math.max(a.w, b.w) * 0.005;
    return Math.abs(a.x - b.x) < tol && Math.abs(a.y - b.y) < tol && Math.abs(a.w - b.w) < tol &&
      Math.abs(a.h - b.h) < tol && Math.abs(a.kx - b.kx) < 0.002;
  }

  function applyView(v) {
    if (sameView(map.view, v)) return;
    map.view = v;
    map.kx = v.kx;
    map.el.setAttribute('viewBox', `${v.x.toFixed(3)} ${v.y.toFixed(3)} ${v.w.toFixed(3)} ${v.h.toFixed(3)}`);
    map.world.setAttribute('transform', `scale(${v.kx.toFixed(5)},1)`);
  }

  // View units per screen pixel: markers are drawn in pixels and scaled by this.
  function unitsPerPixel() {
    const w = map.el.clientWidth || map.el.getBoundingClientRect().width;
    return map.view && w ? map.view.w / w : 0.25;
  }

  const project = (lat, lon) => [lon * map.kx, -lat];

  // Co-located markers (same city) are spread on a small circle, in pixels; the gateway stays put.
  function layoutMarkers(items) {
    const groups = new Map();
    for (const it of items) {
      const k = `${it.lat.toFixed(2)},${it.lon.toFixed(2)}`;
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(it);
    }
    for (const g of groups.values()) {
      const ring = g.filter((it) => it.kind !== 'g');
      const centre = ring.length < g.length;
      if (ring.length === 1 && !centre) { ring[0].ox = 0; ring[0].oy = 0; continue; }
      const r = centre ? 15 : 10;
      ring.forEach((it, i) => {
        const a = -Math.PI / 2 + (i * 2 * Math.PI) / ring.length + (centre ? Math.PI / ring.length : 0);
        it.ox = Math.cos(a) * r;
        it.oy = Math.sin(a) * r;
      });
      for (const it of g) if (it.kind === 'g') { it.ox = 0; it.oy = 0; }
      // One label per group of providers, with the count.
      const provs = g.filter((it) => it.kind === 'p');
      provs.forEach((it, i) => { it.label = i === 0 ? (provs.length > 1 ? `${it.label} ×${provs.length}` : it.label) : ''; });
    }
    return items;
  }

  // Labels that would overlap another label or marker, or leave the map, go to the other side of
  // their marker, or are dropped (the tooltip still has them). Gateway first, then active providers.
  function placeLabels(items, upp) {
    const v = map.view;
    const W = v.w / upp, H = v.h / upp;
    const px = (it) => {
      const [x, y] = project(it.lat, it.lon);
      return [(x - v.x) / upp + it.ox, (y - v.y) / upp + it.oy];
    };
    const boxes = items.map((it) => { const [x, y] = px(it); return { it, x0: x - 7, x1: x + 7, y0: y - 7, y1: y + 7 }; });
    const hit = (b, self) => boxes.some((o) => o.it !== self && b.x0 < o.x1 && b.x1 > o.x0 && b.y0 < o.y1 && b.y1 > o.y0);
    const rank = (it) => (it.kind === 'g' ? 0 : it.kind === 'p' ? (it.src.state === 'active' ? 1 : 2) : 3);
    for (const it of items.filter((i) => i.label).sort((a, b) => rank(a) - rank(b))) {
      const [x, y] = px(it);
      const w = it.label.length * (it.kind === 'g' ? 7 : 6.4) + 2;
      const gap = it.kind === 'g' ? 12 : 10;
      const sides = it.kind === 'g' ? ['l', 'r'] : ['r', 'l'];
      it.side = null;
      for (const side of sides) {
        const x0 = side === 'r' ? x + gap : x - gap - w;
        const b = { it, x0, x1: x0 + w, y0: y - 8, y1: y + 6 };
        if (b.x0 < 2 || b.x1 > W - 2 || b.y0 < 2 || b.y1 > H - 2 || hit(b, it)) continue;
        it.side = side;
        boxes.push(b);
        break;
      }
      if (!it.side) it.label = '';
    }
  }

  function providerTitle(p) {
    const lines = [
      `${placeOf(p)} — provider ${p.short || shortDid(p.id)}`,
      `state: ${p.state}`,
      `price: ${fmtTokens(p.price_micro)} tokens / request`,
      `p95: ${fmtMs(p.p95_ms)}`,
      `free slots: ${fmtInt(p.free_slots)}`,
      `answers won / failures seen: ${fmtInt(p.won)} / ${fmtInt(p.failures)}`,
    ];
    if (Array.isArray(p.models) && p.models.length) lines.push(`models: ${p.models.join(', ')}`);
    return lines.join('\n');
  }

  function createMarker(kind) {
    const g = svg('g');
    g.appendChild(svg('title'));
    if (kind === 'p') {
      g.appendChild(svg('circle', { class: 'halo', r: 9 }));
      g.appendChild(svg('circle', { class: 'core', r: 5.5 }));
      g.appendChild(svg('text', { x: 10, y: 4 }));
    } else if (kind === 'r') {
      g.appendChild(svg('path', { d: 'M0,-7L6.2,4.5H-6.2Z' }));
      g.appendChild(svg('text', { x: 9, y: 4 }));
    } else {
      g.appendChild(svg('circle', { r: 11 }));
      g.appendChild(svg('rect', { x: -5, y: -5, width: 10, height: 10, transform: 'rotate(45)' }));
      g.appendChild(svg('text', { x: -12, y: 4, 'text-anchor': 'end' }));
    }
    return g;
  }

  function updateMarker(el, it, upp) {
    const [x, y] = project(it.lat, it.lon);
    setAttr(el, 'transform',
      `translate(${(x + it.ox * upp).toFixed(4)},${(y + it.oy * upp).toFixed(4)}) scale(${upp.toFixed(5)})`);
    setClass(el, it.cls);
    setText(el.querySelector('title'), it.title);
    const text = el.querySelector('text');
    if (text) {
      setText(text, it.label || '');
      const gap = it.kind === 'g' ? 12 : it.kind === 'p' ? 10 : 9;
      setAttr(text, 'x', it.side === 'l' ? -gap : gap);
      setAttr(text, 'text-anchor', it.side === 'l' ? 'end' : 'start');
    }
  }

  function curve(ax, ay, bx, by) {
    const mx = (ax + bx) / 2, my = (ay + by) / 2;
    const dx = bx - ax, dy = by - ay;
    // Bow each link a little to one side so parallel links stay apart.
    return `M${ax.toFixed(3)},${ay.toFixed(3)}Q${(mx - dy * 0.15).toFixed(3)},${(my + dx * 0.15).toFixed(3)} ${bx.toFixed(3)},${by.toFixed(3)}`;
  }

  function renderMap(s) {
    const gw = s.gateway && isNum(s.gateway.lat) && isNum(s.gateway.lon) ? s.gateway : null;
    const providers = (s.providers || []).filter((p) => isNum(p.lat) && isNum(p.lon));
    const robots = (s.robots || []).filter((r) => isNum(r.lat) && isNum(r.lon));
    applyView(fitView([...(gw ? [gw] : []), ...providers, ...robots]));
    const upp = unitsPerPixel();

    const items = [];
    for (const p of providers) {
      const st = p.state in STATE_RANK ? p.state : 'idle';
      items.push({ kind: 'p', key: p.id, lat: p.lat, lon: p.lon, src: p,
        cls: `marker provider-marker st-${st}`, title: providerTitle(p), label: p.city || p.short || '' });
    }
    robots.forEach((r, i) => {
      items.push({ kind: 'r', key: `${r.name}#${i}`, lat: r.lat, lon: r.lon, src: r, cls: 'marker robot-marker',
        title: `${r.name} — ${placeOf(r)}\nmodel: ${r.model}\nrate: ${isNum(r.rate_hz) ? r.rate_hz.toFixed(1) : '—'} Hz\n` +
          `sent: ${fmtInt(r.requests)}, answered: ${fmtInt(r.answered)}`,
        label: '' });
    });
    if (gw) {
      items.push({ kind: 'g', key: 'gateway', lat: gw.lat, lon: gw.lon, src: gw, cls: 'marker gateway-marker',
        title: `gateway — ${placeOf(gw)}\n${gw.id || ''}`, label: gw.city ? `gateway · ${gw.city}` : 'gateway' });
    }
    layoutMarkers(items);
    placeLabels(items, upp);

    const byKind = { p: [], r: [], g: [] };
    for (const it of items) byKind[it.kind].push(it);
    const layer = { p: map.layers.providers, r: map.layers.robots, g: map.layers.gateway };
    for (const k of ['p', 'r', 'g']) {
      reconcile(layer[k], map.markerCache[k], byKind[k], (it) => it.key, () => createMarker(k),
        (el, it) => updateMarker(el, it, upp));
    }

    // Links: gateway → active providers (animated), robots → gateway.
    const links = [];
    const g = byKind.g[0];
    if (g) {
      const [gx, gy] = project(g.lat, g.lon);
      const gpx = gx + g.ox * upp, gpy = gy + g.oy * upp;
      for (const it of byKind.p) {
        if (it.src.state !== 'active') continue;
        const [px, py] = project(it.lat, it.lon);
        links.push({ key: `p:${it.key}`, cls: 'link to-provider', d: curve(gpx, gpy, px + it.ox * upp, py + it.oy * upp) });
      }
      for (const it of byKind.r) {
        const [rx, ry] = project(it.lat, it.lon);
        const ax = rx + it.ox * upp, ay = ry + it.oy * upp;
        if (Math.hypot(ax - gpx, ay - gpy) / upp < 4) continue;
        links.push({ key: `r:${it.key}`, cls: 'link from-robot', d: curve(ax, ay, gpx, gpy) });
      }
    }
    reconcile(map.links, map.linkCache, links, (l) => l.key, () => svg('path'), (el, l) => {
      setClass(el, l.cls);
      setAttr(el, 'd', l.d);
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Latency histogram
  const hist = { el: $('latency-hist'), W: 440, H: 190, bars: [], key: '' };

  function buildHistogram(bounds, n) {
    const { el, W, H } = hist;
    while (el.firstChild) el.removeChild(el.firstChild);
    const ml = 6, mr = 6, mt = 18, mb = 34;
    const slot = (W - ml - mr) / n;
    const bw = Math.max(4, slot * 0.72);
    hist.plot = { ml, mt, mb, h: H - mt - mb };
    for (const f of [0.5, 1]) {
      const y = mt + hist.plot.h * (1 - f);
      el.appendChild(svg('line', { class: 'grid-line', x1: ml, x2: W - mr, y1: y, y2: y }));
    }
    el.appendChild(svg('line', { class: 'axis', x1: ml, x2: W - mr, y1: H - mb + 0.5, y2: H - mb + 0.5 }));
    hist.bars = [];
    for (let i = 0; i < n; i++) {
      const cx = ml + slot * (i + 0.5);
      const over = i >= bounds.length;
      const rect = svg('rect', { class: 'bar', x: (cx - bw / 2).toFixed(2), width: bw.toFixed(2), y: H - mb, height: 0, rx: 1.5 });
      const title = svg('title');
      rect.appendChild(title);
      const count = svg('text', { class: 'count', x: cx.toFixed(2), 'text-anchor': 'middle', y: H - mb - 4 });
      const lastB = bounds.length ? fmtBound(bounds[bounds.length - 1]) : null;
      const label = over ? (lastB === null ? 'all' : `>${lastB}`) : `≤${fmtBound(bounds[i])}`;
      const lab = svg('text', { x: cx.toFixed(2), y: H - mb + 14, 'text-anchor': 'middle' });
      lab.textContent = label;
      el.appendChild(rect);
      el.appendChild(count);
      el.appendChild(lab);
      const lo = i === 0 ? 0 : bounds[i - 1];
      const range = over ? (lastB === null ? 'all' : `over ${lastB} ms`) : `${fmtBound(lo)}–${fmtBound(bounds[i])} ms`;
      hist.bars.push({ rect, count, title, over, range });
    }
    const unit = svg('text', { class: 'unit', x: W - mr, y: H - 4, 'text-anchor': 'end' });
    unit.textContent = 'latency, ms (upper bound of bucket)';
    el.appendChild(unit);
  }

  function quantileLabel(bounds, counts, total, q) {
    let acc = 0;
    for (let i = 0; i < counts.length; i++) {
      acc += counts[i];
      if (acc >= q * total) {
        if (i < bounds.length) return `≤ ${fmtBound(bounds[i])} ms`;
        return bounds.length ? `> ${fmtBound(bounds[bounds.length - 1])} ms` : '—';
      }
    }
    return '—';
  }

  function renderHistogram(lh) {
    const bounds = (lh && Array.isArray(lh.bounds_ms)) ? lh.bounds_ms : [];
    const counts = (lh && Array.isArray(lh.counts)) ? lh.counts.map((c) => (isNum(c) ? c : 0)) : [];
    const n = Math.max(counts.length, bounds.length + 1);
    const key = bounds.join(',') + '/' + n;
    if (key !== hist.key) { buildHistogram(bounds, n); hist.key = key; }
    const max = Math.max(1, ...counts);
    const total = counts.reduce((a, b) => a + b, 0);
    const { mb, h } = hist.plot;
    hist.bars.forEach((b, i) => {
      const c = counts[i] || 0;
      const bh = c > 0 ? Math.max(2, (c / max) * h) : 0;
      setAttr(b.rect, 'height', bh.toFixed(2));
      setAttr(b.rect, 'y', (hist.H - mb - bh).toFixed(2));
      setAttr(b.rect, 'data-count', c);
      setClass(b.rect, 'bar' + (c === 0 ? ' empty' : '') + (b.over ? ' over' : ''));
      setText(b.title, `${b.range}: ${fmtInt(c)} answers${total ? ` (${(100 * c / total).toFixed(1)}%)` : ''}`);
      setText(b.count, c > 0 ? fmtCompact(c) : '');
      setAttr(b.count, 'y', (hist.H - mb - bh - 4).toFixed(2));
    });
    setText($('latency-note'), total
      ? `n=${fmtInt(total)} · p50 ${quantileLabel(bounds, counts, total, 0.5)} · p95 ${quantileLabel(bounds, counts, total, 0.95)}`
      : 'no answers yet');
  }

  // ---------------------------------------------------------------------------------------------
  // Tables
  const providerRows = new Map();
  const robotRows = new Map();
  const modelRows = new Map();

  function createProviderRow() {
    const tr = h('tr');
    const cells = {};
    for (const k of ['id', 'city', 'state', 'models', 'price', 'slots', 'p95', 'won']) {
      const td = h('td');
      if (['price', 'slots', 'p95', 'won'].includes(k)) td.className = 'num';
      cells[k] = td;
      tr.appendChild(td);
    }
    cells.id.appendChild(h('span', 'id'));
    cells.state.appendChild(h('span', 'pill'));
    cells.models.appendChild(h('div', 'chips'));
    cells.won.appendChild(h('span', 'won'));
    cells.won.appendChild(document.createTextNode(' / '));
    cells.won.appendChild(h('span', 'fails'));
    tr._cells = cells;
    return tr;
  }

  function updateProviderRow(tr, p) {
    const c = tr._cells;
    const idEl = c.id.firstChild;
    setText(idEl, p.short || shortDid(p.id));
    setAttr(idEl, 'title', p.id || '');
    setText(c.city, placeOf(p));
    const st = p.state in STATE_RANK ? p.state : 'idle';
    const pill = c.state.firstChild;
    setClass(pill, `pill st-${st}`);
    setText(pill, p.state || 'unknown');
    const models = Array.isArray(p.models) ? p.models : [];
    const chips = c.models.firstChild;
    const mk = models.join('\u0000');
    if (chips.dataset.key !== mk) {
      chips.dataset.key = mk;
      chips.replaceChildren(...models.map((m) => h('span', 'chip', m)));
    }
    setText(c.price, fmtTokens(p.price_micro));
    setAttr(c.price, 'title', `${fmtInt(p.price_micro)} micro-tokens`);
    setText(c.slots, fmtInt(p.free_slots));
    setText(c.p95, fmtMs(p.p95_ms));
    setText(c.won.children[0], fmtInt(p.won));
    const fails = c.won.children[1];
    setText(fails, fmtInt(p.failures));
    setClass(fails, isNum(p.failures) && p.failures > 0 ? 'fails some' : 'fails');
  }

  function renderProviders(list) {
    const providers = (list || []).slice().sort((a, b) =>
      ((STATE_RANK[a.state] ?? 9) - (STATE_RANK[b.state] ?? 9)) ||
      String(a.city || '').localeCompare(String(b.city || '')) ||
      String(a.id).localeCompare(String(b.id)));
    reconcile($('providers').tBodies[0], providerRows, providers, (p) => p.id, createProviderRow, updateProviderRow);
    $('providers-empty').hidden = providers.length > 0;
    const active = providers.filter((p) => p.state === 'active').length;
    const slots = providers.reduce((a, p) => a + (isNum(p.free_slots) ? p.free_slots : 0), 0);
    setText($('providers-note'), `${providers.length} known · ${active} active · ${fmtInt(slots)} free slots`);
  }

  function renderRobots(list) {
    const robots = list || [];
    reconcile($('robots').tBodies[0], robotRows, robots, (r, i) => `${r.name}#${i}`, () => {
      const tr = h('tr');
      tr._cells = ['name', 'city', 'model', 'rate', 'sent', 'answered'].map((k, i) => {
        const td = h('td', i >= 3 ? 'num' : k === 'model' ? 'id' : '');
        tr.appendChild(td);
        return td;
      });
      return tr;
    }, (tr, r) => {
      const [name, city, model, rate, sent, answered] = tr._cells;
      setText(name, r.name || '—');
      setText(city, placeOf(r));
      setText(model, r.model || '—');
      setText(rate, isNum(r.rate_hz) ? `${r.rate_hz.toFixed(1)} Hz` : '—');
      setText(sent, fmtInt(r.requests));
      setText(answered, fmtInt(r.answered));
    });
    const hz = robots.reduce((a, r) => a + (isNum(r.rate_hz) ? r.rate_hz : 0), 0);
    setText($('robots-note'), robots.length ? `${robots.length} · ${hz.toFixed(1)} Hz offered` : 'none');
  }

  function renderModels(list) {
    reconcile($('models').tBodies[0], modelRows, list || [], (m) => m.id, () => {
      const tr = h('tr');
      tr._cells = [h('td', 'id'), h('td'), h('td', 'id dim')];
      tr._cells.forEach((td) => tr.appendChild(td));
      return tr;
    }, (tr, m) => {
      const [id, kind, hash] = tr._cells;
      setText(id, m.id || '—');
      setText(kind, m.kind || '—');
      const hs = typeof m.hash === 'string' ? m.hash : '';
      setText(hash, hs.length > 12 ? hs.slice(0, 12) + '…' : hs || '—');
      setAttr(hash, 'title', hs);
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Header and totals
  let prev = null; // {uptime, requests}
  let rate = null;

  function renderTotals(s) {
    const t = s.totals || {};
    setText($('total-requests'), fmtInt(t.requests));
    setText($('total-answered'), fmtInt(t.answered));
    setText($('deadline-misses'), fmtInt(t.deadline_misses));
    const hr = $('hit-rate');
    setText(hr, fmtPct(t.deadline_hit_rate));
    setClass(hr, 'value mono' + (isNum(t.deadline_hit_rate)
      ? (t.deadline_hit_rate >= 0.99 ? ' good' : t.deadline_hit_rate >= 0.95 ? ' warn' : ' bad') : ''));
    setText($('spent'), fmtTokens(t.spent_micro));
    setText($('spent-micro'), isNum(t.spent_micro) ? `tokens · ${fmtInt(t.spent_micro)} micro` : 'tokens');
    setClass($('deadline-misses'), 'value mono' + (isNum(t.deadline_misses) && t.deadline_misses > 0 ? ' warn' : ''));

    if (isNum(t.requests) && isNum(t.answered)) {
      const open = Math.max(0, t.requests - t.answered);
      setText($('answered-share'), `${fmtInt(open)} not answered`);
    }
    // Request rate, smoothed, from consecutive snapshots.
    if (isNum(s.uptime_ms) && isNum(t.requests)) {
      if (prev && s.uptime_ms > prev.uptime && t.requests >= prev.requests) {
        const r = ((t.requests - prev.requests) * 1000) / (s.uptime_ms - prev.uptime);
        rate = rate === null ? r : rate * 0.7 + r * 0.3;
      } else if (prev && s.uptime_ms < prev.uptime) {
        rate = null; // the gateway restarted
      }
      prev = { uptime: s.uptime_ms, requests: t.requests };
    }
    setText($('request-rate'), rate === null ? '\u00a0' : `${rate.toFixed(1)} req/s`);
  }

  function renderHeader(s) {
    const gw = s.gateway || {};
    const idEl = $('gateway-id');
    setText(idEl, shortDid(gw.id));
    setAttr(idEl, 'title', gw.id || '');
    setText($('gateway-city'), gw.city ? `${gw.city} (${fmtLatLon(gw.lat, gw.lon)})` : fmtLatLon(gw.lat, gw.lon));
    setText($('uptime'), fmtUptime(s.uptime_ms));
  }

  let last = null;
  function render(s) {
    if (!s || typeof s !== 'object') throw new Error('snapshot is not an object');
    last = s;
    renderHeader(s);
    renderTotals(s);
    renderMap(s);
    renderHistogram(s.latency_histogram);
    renderProviders(s.providers);
    renderRobots(s.robots);
    renderModels(s.models);
  }

  function safeRender(s) {
    try {
      render(s);
    } catch (e) {
      console.error('dashboard: could not render a snapshot:', e);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Live indicator and data feed
  const live = { el: $('live'), text: $('live-text'), lastAt: 0, state: 'connecting' };
  function setLive(state) {
    live.state = state;
    setClass(live.el, `live ${state === 'live' ? 'live-on' : state}`);
    setText(live.text, state);
  }

  function onSnapshot(s) {
    live.lastAt = performance.now();
    if (live.state !== 'live') setLive('live');
    safeRender(s);
  }

  let es = null;
  function connect() {
    es = new EventSource('/v1/events');
    es.addEventListener('open', () => setLive('live'));
    es.addEventListener('snapshot', (ev) => {
      let s;
      try {
        s = JSON.parse(ev.data);
      } catch (e) {
        console.error('dashboard: bad snapshot event:', e);
        return;
      }
      onSnapshot(s);
    });
    es.addEventListener('error', (ev) => {
      // An `event: error` sent by the server arrives here too, as a MessageEvent with data:
      // the stream is fine, that one snapshot is not.
      if (typeof ev.data === 'string') {
        console.warn('dashboard: the gateway could not make a snapshot:', ev.data);
        return;
      }
      if (es.readyState === EventSource.CLOSED) {
        // The server refused the stream (EventSource gives up then): try again ourselves.
        setLive('offline');
        es.close();
        setTimeout(connect, 3000);
      } else {
        setLive('reconnecting'); // EventSource retries by itself
      }
    });
  }

  setInterval(() => {
    if (live.state === 'live' && performance.now() - live.lastAt > STALE_MS) setLive('stale');
  }, 1000);

  new ResizeObserver(() => { if (last) safeRender(last); }).observe(map.el);

  async function start() {
    drawGraticule();
    const mapLoaded = loadCountries();
    try {
      const res = await fetch('/v1/network', { cache: 'no-store' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const s = await res.json();
      live.lastAt = performance.now();
      safeRender(s);
    } catch (e) {
      // Not fatal: the event stream brings the next snapshot.
      console.warn('dashboard: GET /v1/network failed, waiting for the event stream:', e);
    }
    connect();
    await mapLoaded;
  }

  start();
})();
