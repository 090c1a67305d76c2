// Preference ranking: one product's images from several methods, shown in this annotator's own
// random order (chosen and stored by the server). Rank by dragging or by typing the numbers.
"use strict";
(async () => {
  const batchId = pathId();
  const me = await api.init();
  const want = 1 + (me.prefetch ?? 2);
  let order = [];   // the chips' numbers, best first
  const $ = (id) => document.getElementById(id);

  const batch = (await api.get("/api/batches")).find((b) => b.id === batchId);
  if (batch && batch.kind === "availability") { location.replace(`/annotate/${batchId}`); return; }
  $("batch-name").textContent = batch ? batch.name : "";

  const tasks = taskQueue({
    batchId, want, answerPath: "rank", undoneMessage: "Undone: rank this set again",
    imageUrls: (task) => [task.product_url, ...task.candidates.map((c) => c.url)], keepImages: 30,
    showCount: (n) => { $("count").textContent = `${n} ranked`; },
    render,
  });
  const { skip, undo } = tasks;
  const sep = () => (tasks.current && tasks.current.candidates.length > 9 ? "," : "");
  const byNumber = (n) => tasks.current.candidates.find((c) => c.number === n);

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

  // the shown set: the product, its images and the ranking so far (their order as shown)
  function render(task) {
    $("product").src = task.product_url || "";
    $("caption").textContent = task.caption || "(no caption)";
    $("candidates").replaceChildren(...task.candidates.map((c) =>
      el("div", { class: "candidate" }, el("img", { src: c.url, alt: `image ${c.number}` }), el("span", { class: "num", text: String(c.number) }))));
    order = task.candidates.map((c) => c.number);
    describeKeys(task.candidates.length);
    $("typed").value = "";
    renderRanking();
    $("typed").focus();
  }

  // typed numbers go first, the rest keep their place
  $("typed").addEventListener("input", () => {
    if (!tasks.current) return;
    const text = $("typed").value.trim();
    const typed = (sep() || /[\s,]/.test(text) ? text.split(/[\s,]+/) : text.split("")).map(Number)
      .filter((n, i, all) => byNumber(n) && all.indexOf(n) === i);
    order = [...typed, ...tasks.current.candidates.map((c) => c.number).filter((n) => !typed.includes(n))];
    renderRanking();
  });
  $("typed").addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); submit(); }
    else if (event.key === "z" || event.key === "Z") { event.preventDefault(); undo(); }
    else if (event.key === "s" || event.key === "S") { event.preventDefault(); skip(); }
  });

  function submit() {
    if (!tasks.current) return;
    const text = $("typed").value.trim();
    const ranking = text || order.join(sep());
    const n = tasks.current.candidates.length;
    const numbers = (sep() || /[\s,]/.test(ranking) ? ranking.split(/[\s,]+/) : ranking.split("")).map(Number);
    if (numbers.length !== n || new Set(numbers).size !== n || numbers.some((x) => !byNumber(x))) {
      toast(`Name each image 1–${n} once, best first`, "error");
      return;
    }
    tasks.answer({ ranking: numbers.join(sep()) });
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

  await tasks.start(batch ? batch.mine : 0);
  document.body.dataset.ready = "1";
})();
