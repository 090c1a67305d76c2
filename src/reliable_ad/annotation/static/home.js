// Home: the batches this user can work on, with overall progress and their own count.
"use strict";
(async () => {
  await api.init();
  const box = document.getElementById("batches");
  const batches = await api.get("/api/batches");
  box.replaceChildren();
  if (!batches.length) box.append(el("p", { class: "muted", text: "No batches yet. An admin imports them with `reliable-ad annotate import`." }));
  for (const b of batches) {
    const href = (b.kind === "preference" ? "/rank/" : "/annotate/") + b.id;
    box.append(el("div", { class: "card batch", dataset: { batch: b.id } },
      el("h2", { text: b.name }),
      el("div", { class: "muted", text: `${b.kind === "preference" ? "Rank images" : "Label availability"} · ${b.tasks} items · ${b.k} answers each${b.active ? "" : " · closed"}` }),
      el("div", { class: "progress" }, el("div", { style: { width: `${(100 * b.progress).toFixed(1)}%` } })),
      el("div", { text: `${pct(b.progress)} done · ${b.mine} by you` }),
      b.active ? el("a", { class: "button primary", href, text: "Start" }) : null,
    ));
  }
})();
