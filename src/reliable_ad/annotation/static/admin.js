// Admin: batches (progress, k, queue order, open/closed), one batch's statistics (throughput,
// agreement, class distribution or preference results) and users (add, invite, disable).
"use strict";
(async () => {
  await api.init();
  const $ = (id) => document.getElementById(id);
  let selected = null;
  const COLORS = ["#2457d6", "#d9822b", "#1f8a4c"];

  function cell(...children) { return el("td", {}, ...children); }

  async function loadBatches() {
    const batches = await api.get("/api/batches");
    if (selected === null && batches.length) selected = batches[0].id;
    $("batches").tBodies[0].replaceChildren(...batches.map((b) => {
      const k = el("input", { type: "number", min: 1, max: 50, value: b.k, class: "k", title: "answers per item" });
      k.style.width = "4.5em";
      k.addEventListener("change", () => change(b.id, { k: Number(k.value) }));
      const order = el("select", { class: "order", disabled: b.kind === "preference" },
        ["sequential", "uncertainty", "random"].map((o) => el("option", { value: o, selected: o === b.order, text: o === "uncertainty" ? "uncertainty (active learning)" : o })));
      order.addEventListener("change", () => change(b.id, { order: order.value }));
      const active = el("input", { type: "checkbox", checked: b.active, class: "active", title: "open for annotators" });
      active.addEventListener("change", () => change(b.id, { active: active.checked }));
      const bar = el("div", { class: "progress" }, el("div", { style: { width: `${(100 * b.progress).toFixed(1)}%` } }));
      return el("tr", { dataset: { batch: b.id } },
        cell(el("a", { href: "#", text: b.name, onclick: (e) => { e.preventDefault(); selected = b.id; loadDetail(); } })),
        cell(b.kind), cell(String(b.tasks)), cell(bar, `${b.answers} / ${b.tasks * b.k} answers`),
        cell(k), cell(order), cell(active),
        cell(b.kind === "availability" ? el("a", { href: `/admin/review/${b.id}`, text: "Review disagreements" }) : ""));
    }));
  }

  async function change(batchId, body) {
    try { await api.post(`/api/admin/batches/${batchId}`, body); toast("Saved"); }
    catch (e) { toast(e.message, "error"); }
    await refresh();
  }

  function table(headers, rows) {
    return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((v) => el("td", {}, v))))));
  }

  // grouped bar chart, drawn as SVG without a library
  function barChart(names, series) {
    const ns = "http://www.w3.org/2000/svg";
    const w = 640, h = 220, left = 36, bottom = 44, top = 10;
    const max = Math.max(1, ...series.flatMap((s) => s.values));
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("class", "chart");
    svg.setAttribute("width", "100%");
    const add = (tag, attrs, text) => {
      const node = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text !== undefined) node.textContent = text;
      svg.append(node);
      return node;
    };
    const groupW = (w - left) / names.length, barW = (groupW - 12) / series.length;
    for (let t = 0; t <= 4; t++) {
      const y = top + (h - top - bottom) * (1 - t / 4);
      add("line", { x1: left, x2: w, y1: y, y2: y, stroke: "#e4e7ee" });
      add("text", { x: left - 4, y: y + 4, "text-anchor": "end" }, String(Math.round((max * t) / 4)));
    }
    names.forEach((name, i) => {
      series.forEach((s, j) => {
        const v = s.values[i];
        const bh = (h - top - bottom) * (v / max);
        const rect = add("rect", { x: left + i * groupW + 6 + j * barW, y: h - bottom - bh, width: barW - 2, height: bh, fill: COLORS[j] });
        const tip = document.createElementNS(ns, "title");
        tip.textContent = `${s.name}: ${v}`;
        rect.append(tip);
      });
      add("text", { x: left + i * groupW + groupW / 2, y: h - bottom + 16, "text-anchor": "middle" }, name);
    });
    return el("div", {}, svg, el("div", { class: "legend" }, series.map((s, j) => {
      const swatch = el("i");
      swatch.style.background = COLORS[j];
      return el("span", {}, swatch, s.name);
    })));
  }

  async function loadDetail() {
    const box = $("detail");
    if (selected === null) { box.replaceChildren(); return; }
    const st = await api.get(`/api/admin/batches/${selected}/stats`);
    const p = st.progress;
    const cards = [el("div", { class: "card", id: "progress" },
      el("h2", { text: `${st.batch.name} · ${st.batch.kind}` }),
      el("div", { class: "kpi" },
        [["items", p.tasks], ["complete", `${p.complete} (${pct(p.tasks ? p.complete / p.tasks : 0)})`], ["answers", `${p.answers} / ${p.wanted}`],
          ["held now", p.open], ["skipped", p.skipped], ["expired", p.expired], ["settled by admin", p.resolved]]
          .map(([k, v]) => el("div", {}, el("b", { text: String(v) }), el("span", { class: "muted", text: k })))),
    )];
    cards.push(el("div", { class: "card", id: "throughput" }, el("h2", { text: "Annotators" }),
      table(["annotator", "answers", "last hour", "median s / item", "items / working hour", "last answer"],
        st.annotators.map((a) => [a.user, String(a.answers), String(a.last_hour), fmt(a.median_seconds, 1), fmt(a.per_hour, 0), a.last_answer || "–"]))));
    if (st.agreement) {
      const ag = st.agreement;
      cards.push(el("div", { class: "grid2" },
        el("div", { class: "card", id: "agreement" }, el("h2", { text: "Agreement" }),
          el("div", { class: "kpi" },
            el("div", {}, el("b", { text: fmt(ag.fleiss_kappa, 3) }), el("span", { class: "muted", text: "Fleiss' κ" })),
            el("div", {}, el("b", { text: fmt(ag.cohen_mean, 3) }), el("span", { class: "muted", text: "mean Cohen's κ" })),
            el("div", {}, el("b", { text: String(ag.items) }), el("span", { class: "muted", text: "items with 2+ labels" }))),
          ag.cohen_pairs.length ? table(["annotator", "annotator", "items", "Cohen's κ"],
            ag.cohen_pairs.map((c) => [c.a, c.b, String(c.items), fmt(c.kappa, 3)])) : el("p", { class: "muted", text: "No pair of annotators shares 5 items yet." })),
        el("div", { class: "card", id: "classes-chart" }, el("h2", { text: "Class distribution" }),
          barChart(st.classes.names.map((n) => n.replace(" Mismatch", "").replace("Hallucination", "Halluc.").replace("Indistinctiveness", "Indistinct.")),
            [{ name: "all votes", values: st.classes.votes }, { name: "majority label", values: st.classes.majority }, { name: "RFNet", values: st.classes.rfnet }]),
          el("p", { class: "muted", text: st.classes.rfnet_items ? `RFNet agrees with the majority on ${pct(st.classes.rfnet_vs_majority)} of ${st.classes.rfnet_items} labelled items.` : "No RFNet verdicts in this batch." }))));
    }
    if (st.preference) {
      const pr = st.preference;
      const methods = Object.keys(pr.mean_rank);
      const win = {};
      for (const r of pr.pairwise) win[r.method + "\u0000" + r.versus] = r;
      cards.push(el("div", { class: "grid2" },
        el("div", { class: "card", id: "mean-rank" }, el("h2", { text: `Mean rank (1 = best) · ${pr.rankings} rankings of ${pr.sets} sets` }),
          table(["method", "mean rank", "95% interval", "rankings"], methods.map((m) => {
            const r = pr.mean_rank[m];
            return [m, fmt(r.mean_rank, 2), `${fmt(r.ci_low, 2)} – ${fmt(r.ci_high, 2)}`, String(r.n)];
          }))),
        el("div", { class: "card", id: "pairwise" }, el("h2", { text: "Pairwise win rate (row beats column), 95% Wilson interval" }),
          table(["", ...methods], methods.map((a) => [a, ...methods.map((b) => {
            const r = win[a + "\u0000" + b];
            return a === b || !r ? "–" : `${pct(r.win_rate)} (${pct(r.ci_low)}–${pct(r.ci_high)}, n=${r.n})`;
          })])))));
    }
    box.replaceChildren(...cards);
  }

  async function loadUsers() {
    const users = await api.get("/api/admin/users");
    $("users").tBodies[0].replaceChildren(...users.map((u) => el("tr", { dataset: { user: u.id } },
      cell(u.username), cell(u.role), cell(!u.active ? "disabled" : u.invited ? "invited" : "active"),
      cell(
        el("button", { text: u.active ? "Disable" : "Enable", onclick: () => changeUser(u.id, { active: !u.active }) }), " ",
        el("button", { text: "New invite link", onclick: () => changeUser(u.id, { reinvite: true }) })))));
  }

  function showInvite(result) {
    $("invite").textContent = result.invite_url
      ? `Send ${result.username} this invite link (shown once): ${location.origin}${result.invite_url}` : `${result.username} saved.`;
  }

  async function changeUser(id, body) {
    try { showInvite(await api.post(`/api/admin/users/${id}`, body)); } catch (e) { toast(e.message, "error"); }
    await loadUsers();
  }

  $("add-user").addEventListener("submit", async (event) => {
    event.preventDefault();
    const password = $("new-password").value;
    try {
      showInvite(await api.post("/api/admin/users", {
        username: $("new-username").value, role: $("new-role").value, password: password || null,
      }));
      $("new-username").value = "";
      $("new-password").value = "";
    } catch (e) { toast(e.message, "error"); }
    await loadUsers();
  });

  async function refresh() {
    await loadBatches();
    await loadDetail();
    await loadUsers();
  }
  $("refresh").addEventListener("click", refresh);
  await refresh();
  setInterval(() => { if (!document.hidden) loadDetail().catch(() => {}); }, 15000);
  document.body.dataset.ready = "1";
})();
