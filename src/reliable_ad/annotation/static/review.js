// Disagreement review: an admin settles items whose annotators disagreed.
"use strict";
(async () => {
  const batchId = pathId();
  await api.init();
  const $ = (id) => document.getElementById(id);
  const guidance = await api.get("/api/guidance");
  let items = [];
  let current = null;

  guidance.classes.forEach((c, i) => {
    $("classes").append(el("button", { class: i === 5 ? "unsuitable" : "", dataset: { label: i }, onclick: () => decide(i) },
      el("span", { class: "name" }, el("kbd", { text: String(i + 1) }), " ", c.name), el("span", { class: "short", text: c.short })));
  });

  async function load() {
    items = await api.get(`/api/admin/batches/${batchId}/disagreements?limit=200`);
    next();
  }

  function next() {
    current = items.shift() || null;
    $("workspace").classList.toggle("hidden", !current);
    $("done").classList.toggle("hidden", !!current);
    $("left").textContent = current ? `${items.length + 1} to review` : "";
    if (!current) return;
    $("generated").src = current.image_url;
    $("product").src = current.product_url || "";
    $("caption").textContent = current.caption || "(no caption)";
    $("votes").replaceChildren(...current.votes.map((v) => el("div", {}, el("span", { class: "vote", text: v.label }), " ", v.user)));
    $("rfnet").textContent = current.rfnet_label ? `RFNet said: ${current.rfnet_label}` : "";
    document.body.dataset.task = current.task;
  }

  async function decide(label) {
    if (!current) return;
    try {
      await api.post(`/api/admin/tasks/${current.task}/resolve`, { label });
      toast(`Final label: ${guidance.classes[label].name}`);
      next();
    } catch (e) { toast(e.message, "error"); }
  }

  $("next").addEventListener("click", next);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typingInField(event)) return;
    if (/^[1-6]$/.test(event.key)) { event.preventDefault(); decide(Number(event.key) - 1); }
    else if (event.key === "n" || event.key === "N") next();
  });
  await load();
  document.body.dataset.ready = "1";
})();
