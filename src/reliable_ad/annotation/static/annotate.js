// Availability labelling. The page holds the shown item plus `prefetch` more, whose images are
// loaded in the background, so the next item appears the moment a key is pressed. Answers are
// sent in order through a serial queue and retried while the network is away; an item whose
// answer is still in flight is never shown twice.
"use strict";
(async () => {
  const batchId = pathId();
  const me = await api.init();
  const want = 1 + (me.prefetch ?? 2);
  const send = serialQueue();
  const queue = [];          // claimed items, not shown yet
  const answered = new Set(); // assignment ids answered here (their POST may still be in flight)
  const preloaded = [];       // Image objects keep the preloaded images alive
  let current = null;
  let pending = 0;  // server calls in flight: an empty queue then means "loading", not "done"
  let shownAt = 0;
  let count = 0;

  const $ = (id) => document.getElementById(id);
  const guidance = await api.get("/api/guidance");
  const batch = (await api.get("/api/batches")).find((b) => b.id === batchId);
  if (batch && batch.kind === "preference") { location.replace(`/rank/${batchId}`); return; }
  $("batch-name").textContent = batch ? batch.name : "";
  count = batch ? batch.mine : 0;
  const showCount = () => { $("count").textContent = `${count} labelled`; };
  showCount();
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

  function preload(task) {
    for (const url of [task.image_url, task.product_url]) {
      if (!url) continue;
      const img = new Image();
      img.src = url;
      preloaded.push(img);
      if (preloaded.length > 12) preloaded.shift();
    }
  }

  function show(task) {
    current = task || null;
    $("workspace").classList.toggle("hidden", !current);
    $("done").classList.toggle("hidden", !!current || pending > 0);
    $("loading").classList.toggle("hidden", !!current || pending === 0);
    if (!current) return;
    $("generated").src = current.image_url;
    $("product").src = current.product_url || "";
    $("product").classList.toggle("hidden", !current.product_url);
    $("caption").textContent = current.caption || "(no caption)";
    document.body.dataset.assignment = current.assignment;
    shownAt = performance.now();
    updateMore();
  }

  // new held items from the server: queue them (and preload their images) unless already known
  function merge(tasks) {
    const known = new Set(queue.map((t) => t.assignment));
    if (current) known.add(current.assignment);
    for (const task of tasks) {
      if (known.has(task.assignment) || answered.has(task.assignment)) continue;
      queue.push(task);
      preload(task);
    }
    if (!current) show(queue.shift());
  }

  async function fill() {
    merge((await withRetry(() => api.post(`/api/batches/${batchId}/next`, { count: want }))).tasks);
  }

  function track(promise) {
    pending += 1;
    if (!current) show(null);
    return promise.finally(() => {
      pending -= 1;
      if (!current) show(queue.shift());
    });
  }

  function advance() {
    show(queue.shift());
  }

  // an answer the server refused: a conflict (409: not needed any more, or answered in another tab)
  // is said and the page moves on; for any other reason the item is shown again
  function restore(task, e) {
    count = Math.max(0, count - 1);
    showCount();
    refused(e);
    if (e.status === 409) return;
    answered.delete(task.assignment);
    if (current) queue.unshift(current);
    show(task);
  }

  function choose(label) {
    if (!current) return;
    const task = current;
    const duration = Math.round(performance.now() - shownAt);
    answered.add(task.assignment);
    count += 1;
    showCount();
    advance();
    track(send(() => withRetry(() => api.post(`/api/assignments/${task.assignment}/label`, { label, duration_ms: duration, next: want })))
      .then((r) => merge(r.tasks))
      .catch((e) => restore(task, e)));
  }

  function skip() {
    if (!current) return;
    const task = current;
    answered.add(task.assignment);
    toast("Skipped");
    advance();
    track(send(() => withRetry(() => api.post(`/api/assignments/${task.assignment}/skip`, { next: want })))
      .then((r) => merge(r.tasks))
      .catch(refused));
  }

  function undo() {
    send(async () => {
      const task = await api.post(`/api/batches/${batchId}/undo`);
      answered.delete(task.assignment);
      if (current) queue.unshift(current);
      const i = queue.findIndex((t) => t.assignment === task.assignment);
      if (i >= 0) queue.splice(i, 1);
      if (task.undone === "answered") count = Math.max(0, count - 1);
      showCount();
      show(task);
      toast("Undone: label this item again");
    }).catch((e) => toast(e.message, "error"));
  }

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

  await track(send(fill).catch((e) => toast(e.message, "error")));
  keepHold(() => send(fill).catch(() => {}));
  document.body.dataset.ready = "1";
})();
