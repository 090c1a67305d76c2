// Preference ranking: one product's images from several methods, shown in this annotator's own
// random order (chosen and stored by the server). Rank by dragging or by typing the numbers.
"use strict";
(async () => {
  const batchId = pathId();
  const me = await api.init();
  const want = 1 + (me.prefetch ?? 2);
  const send = serialQueue();
  const queue = [];
  const answered = new Set();
  const preloaded = [];
  let current = null;
  let pending = 0;  // server calls in flight: an empty queue then means "loading", not "done"
  let order = [];   // the chips' numbers, best first
  let shownAt = 0;
  let count = 0;
  const $ = (id) => document.getElementById(id);

  const batch = (await api.get("/api/batches")).find((b) => b.id === batchId);
  if (batch && batch.kind === "availability") { location.replace(`/annotate/${batchId}`); return; }
  $("batch-name").textContent = batch ? batch.name : "";
  count = batch ? batch.mine : 0;
  const showCount = () => { $("count").textContent = `${count} ranked`; };
  showCount();

  const sep = () => (current && current.candidates.length > 9 ? "," : "");
  const byNumber = (n) => current.candidates.find((c) => c.number === n);

  function preload(task) {
    for (const url of [task.product_url, ...task.candidates.map((c) => c.url)]) {
      if (!url) continue;
      const img = new Image();
      img.src = url;
      preloaded.push(img);
      if (preloaded.length > 30) preloaded.shift();
    }
  }

  function renderRanking() {
    const strip = $("ranking");
    strip.replaceChildren(...order.map((n, i) => {
      const c = byNumber(n);
      const chip = el("div", { class: "chip", draggable: "true", dataset: { number: n } },
        el("img", { src: c.url, alt: `image ${n}` }), el("span", { class: "num", text: String(n) }),
        el("div", { class: "place", text: `#${i + 1}` }));
      chip.addEventListener("dragstart", (e) => { e.dataTransfer.setData("text/plain", String(n)); chip.classList.add("dragging"); });
      chip.addEventListener("dragend", () => chip.classList.remove("dragging"));
      chip.addEventListener("dragover", (e) => { e.preventDefault(); chip.classList.add("over"); });
      chip.addEventListener("dragleave", () => chip.classList.remove("over"));
      chip.addEventListener("drop", (e) => {
        e.preventDefault();
        chip.classList.remove("over");
        const moved = Number(e.dataTransfer.getData("text/plain"));
        if (!moved || moved === n) return;
        order = order.filter((x) => x !== moved);
        order.splice(order.indexOf(n), 0, moved);
        $("typed").value = order.join(sep());
        renderRanking();
      });
      return chip;
    }));
  }

  // the keys to press, for the number of images shown: "1–3", an example "312" (commas past 9)
  function describeKeys(n) {
    const example = [n, ...Array.from({ length: n - 1 }, (_, i) => i + 1)].join(n > 9 ? "," : "");
    const keys = n > 9 ? `the numbers 1–${n}, separated by commas,` : `1–${n}`;
    $("rank-hint").replaceChildren(`Drag the small images into order, or press ${keys} in order of preference, `
      + "best first (for example ", el("b", { text: example }), "), and press Enter.");
    $("typed").placeholder = `e.g. ${example}`;
  }

  function show(task) {
    current = task || null;
    $("workspace").classList.toggle("hidden", !current);
    $("done").classList.toggle("hidden", !!current || pending > 0);
    $("loading").classList.toggle("hidden", !!current || pending === 0);
    if (!current) return;
    $("product").src = current.product_url || "";
    $("caption").textContent = current.caption || "(no caption)";
    $("candidates").replaceChildren(...current.candidates.map((c) =>
      el("div", { class: "candidate" }, el("img", { src: c.url, alt: `image ${c.number}` }), el("span", { class: "num", text: String(c.number) }))));
    order = current.candidates.map((c) => c.number);
    describeKeys(current.candidates.length);
    $("typed").value = "";
    renderRanking();
    document.body.dataset.assignment = current.assignment;
    shownAt = performance.now();
    $("typed").focus();
  }

  // typed numbers go first, the rest keep their place
  $("typed").addEventListener("input", () => {
    if (!current) return;
    const text = $("typed").value.trim();
    const typed = (sep() || /[\s,]/.test(text) ? text.split(/[\s,]+/) : text.split("")).map(Number)
      .filter((n, i, all) => byNumber(n) && all.indexOf(n) === i);
    order = [...typed, ...current.candidates.map((c) => c.number).filter((n) => !typed.includes(n))];
    renderRanking();
  });
  $("typed").addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); submit(); }
    else if (event.key === "z" || event.key === "Z") { event.preventDefault(); undo(); }
    else if (event.key === "s" || event.key === "S") { event.preventDefault(); skip(); }
  });

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
  // is said and the page moves on; for any other reason the set is shown again
  function restore(task, e) {
    count = Math.max(0, count - 1);
    showCount();
    refused(e);
    if (e.status === 409) return;
    answered.delete(task.assignment);
    if (current) queue.unshift(current);
    show(task);
  }

  function submit() {
    if (!current) return;
    const text = $("typed").value.trim();
    const ranking = text || order.join(sep());
    const task = current;
    const n = task.candidates.length;
    const numbers = (sep() || /[\s,]/.test(ranking) ? ranking.split(/[\s,]+/) : ranking.split("")).map(Number);
    if (numbers.length !== n || new Set(numbers).size !== n || numbers.some((x) => !byNumber(x))) {
      toast(`Name each image 1–${n} once, best first`, "error");
      return;
    }
    answered.add(task.assignment);
    const duration = Math.round(performance.now() - shownAt);
    count += 1;
    showCount();
    advance();
    track(send(() => withRetry(() => api.post(`/api/assignments/${task.assignment}/rank`, { ranking: numbers.join(sep()), duration_ms: duration, next: want })))
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
      if (task.undone === "answered") { count = Math.max(0, count - 1); showCount(); }
      show(task);
      toast("Undone: rank this set again");
    }).catch((e) => toast(e.message, "error"));
  }

  $("submit").addEventListener("click", submit);
  $("undo").addEventListener("click", undo);
  $("skip").addEventListener("click", skip);
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typingInField(event)) return;
    if (event.key === "z" || event.key === "Z" || event.key === "Backspace") { event.preventDefault(); undo(); }
    else if (event.key === "s" || event.key === "S") { event.preventDefault(); skip(); }
    else if (event.key === "Enter") { event.preventDefault(); submit(); }
  });

  await track(send(fill).catch((e) => toast(e.message, "error")));
  keepHold(() => send(fill).catch(() => {}));
  document.body.dataset.ready = "1";
})();
