// Availability labelling: the shown item's product and generated ad, a key per class. The page
// holds the shown item plus `prefetch` more (taskQueue in common.js), so the next item appears the
// moment a key is pressed.
"use strict";
(async () => {
  const batchId = pathId();
  const me = await api.init();
  const want = 1 + (me.prefetch ?? 2);
  const $ = (id) => document.getElementById(id);
  const guidance = await api.get("/api/guidance");
  const batch = (await api.get("/api/batches")).find((b) => b.id === batchId);
  if (batch && batch.kind === "preference") { location.replace(`/rank/${batchId}`); return; }
  $("batch-name").textContent = batch ? batch.name : "";
  $("general").textContent = guidance.general;

  // class buttons (1-6) and the guidance panel, from one source: the server's guidance
  guidance.classes.forEach((c, i) => {
    $("classes").append(el("button", {
      class: i === 5 ? "unsuitable" : "", dataset: { label: i }, title: c.short, onclick: () => choose(i),
    }, el("span", { class: "name" }, el("kbd", { text: String(i + 1) }), " ", c.name), el("span", { class: "short", text: c.short })));
    $("guide-classes").append(el("div", {},
      el("h3", {}, el("kbd", { text: String(i + 1) }), " ", c.name),
      el("div", { text: c.short }),
      el("ul", {}, c.examples.map((x) => el("li", { text: x })))));
  });

  // the guidance panel scrolls inside itself; a fade with "More below" shows while there is more
  const guideScroll = $("guide-scroll");
  function updateMore() {
    const more = guideScroll.scrollTop + guideScroll.clientHeight < guideScroll.scrollHeight - 4;
    $("guide-more").classList.toggle("hidden", !more);
  }
  guideScroll.addEventListener("scroll", updateMore, { passive: true });
  addEventListener("resize", updateMore);
  $("guide-more-button").addEventListener("click", () =>
    guideScroll.scrollBy({ top: guideScroll.clientHeight * 0.8, behavior: "smooth" }));

  // hiding the guidance gives its column to the images; the choice is kept for next time
  function showGuide(visible) {
    $("guide").classList.toggle("hidden", !visible);
    $("work").classList.toggle("no-guide", !visible);
    try { localStorage.setItem("guidance-hidden", visible ? "" : "1"); } catch (e) { /* private mode */ }
    if (visible) updateMore();
  }
  const toggleGuide = () => showGuide($("guide").classList.contains("hidden"));
  let guideHidden = false;
  try { guideHidden = localStorage.getItem("guidance-hidden") === "1"; } catch (e) { /* private mode */ }
  showGuide(!guideHidden);

  const tasks = taskQueue({
    batchId, want, answerPath: "label", undoneMessage: "Undone: label this item again",
    imageUrls: (task) => [task.image_url, task.product_url], keepImages: 12,
    showCount: (n) => { $("count").textContent = `${n} labelled`; },
    render(task) {
      $("generated").src = task.image_url;
      $("product").src = task.product_url || "";
      $("product").classList.toggle("hidden", !task.product_url);
      $("caption").textContent = task.caption || "(no caption)";
      updateMore();
    },
  });
  const choose = (label) => tasks.answer({ label });
  const { skip, undo } = tasks;

  $("undo").addEventListener("click", undo);
  $("skip").addEventListener("click", skip);
  $("toggle-guide").addEventListener("click", toggleGuide);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typingInField(event)) return;
    if (/^[1-6]$/.test(event.key)) { event.preventDefault(); choose(Number(event.key) - 1); }
    else if (event.key === "z" || event.key === "Z" || event.key === "Backspace") { event.preventDefault(); undo(); }
    else if (event.key === "s" || event.key === "S") { event.preventDefault(); skip(); }
    else if (event.key === "g" || event.key === "G") { toggleGuide(); }
  });

  await tasks.start(batch ? batch.mine : 0);
  document.body.dataset.ready = "1";
})();
