// Shared by every page: the API client (session cookie + CSRF header), a safe DOM builder
// (text is always set as text, never parsed as HTML) and small helpers.
"use strict";

const api = {
  csrf: null,
  me: null,

  async call(method, url, body, { csrf } = {}) {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = csrf || api.csrf;
    if (method !== "GET" && token) headers["X-CSRF-Token"] = token;
    let response;
    try {
      response = await fetch(url, {
        method, headers, credentials: "same-origin",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      const err = new Error("cannot reach the server; check your connection");
      err.status = 0;
      throw err;
    }
    if (response.status === 401 && !url.startsWith("/api/login") && !url.startsWith("/api/invite")) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname);
      throw new Error("not logged in");
    }
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      let detail = data && data.detail;
      if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
      const err = new Error(detail || response.statusText);
      err.status = response.status;
      throw err;
    }
    return data;
  },
  get(url) { return api.call("GET", url); },
  post(url, body) { return api.call("POST", url, body === undefined ? {} : body); },

  async init() {
    api.me = await api.get("/api/me");
    api.csrf = api.me.csrf;
    const who = document.getElementById("who");
    if (who) who.textContent = api.me.username + (api.me.role === "admin" ? " (admin)" : "");
    const adminLink = document.getElementById("admin-link");
    if (adminLink && api.me.role === "admin") adminLink.classList.remove("hidden");
    const logout = document.getElementById("logout");
    if (logout) logout.addEventListener("click", async () => {
      try { await api.post("/api/logout"); } finally { location.href = "/login"; }
    });
    return api.me;
  },
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "style") Object.assign(node.style, value);  // CSSOM: allowed by the CSP, unlike style=""
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

let toastTimer = null;
function toast(message, kind) {
  let box = document.getElementById("toast");
  if (!box) { box = el("div", { id: "toast", class: "toast", role: "status" }); document.body.append(box); }
  box.textContent = message;
  box.className = "toast show" + (kind === "error" ? " error" : "");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.className = "toast"; }, kind === "error" ? 5000 : 1800);
}

// A message that stays until dismissed, under the header; with `reload`, a button to reload.
function notice(message, { reload = false } = {}) {
  let box = document.getElementById("notice");
  if (!box) {
    box = el("div", { id: "notice", class: "notice", role: "alert" });
    const header = document.querySelector("header.bar");
    if (header) header.after(box); else document.body.prepend(box);
  }
  box.replaceChildren(el("span", { class: "message", text: message }),
    reload ? el("button", { type: "button", text: "Reload", onclick: () => location.reload() }) : null,
    el("button", { type: "button", class: "link", text: "Dismiss", onclick: () => box.remove() }));
}

// An answer or skip the server refused, said so that it is seen: one given in another tab already
// needs a reload (a notice that stays); anything else is a passing message.
function refused(e) {
  if (e.status === 409 && /another tab/.test(e.message)) notice(`Not saved: ${e.message}`, { reload: true });
  else toast(`Not saved: ${e.message}`, "error");
}

// Keep the items this page holds while its user works. The server lets an item go back to the queue
// after a short hold (two minutes) unless the page asks again; it asks every `everyMs` while the
// page is visible and there was input in the last `idleMs`. A page opened and left alone does not
// ask, so it keeps nothing from other annotators for long.
function keepHold(renew, { everyMs = 30000, idleMs = 90000 } = {}) {
  let lastInput = -Infinity;
  const seen = () => { lastInput = Date.now(); };
  for (const type of ["keydown", "pointerdown", "pointermove", "wheel", "touchstart"]) {
    addEventListener(type, seen, { capture: true, passive: true });
  }
  return setInterval(() => {
    if (!document.hidden && Date.now() - lastInput < idleMs) renew();
  }, everyMs);
}

function pathId() {
  const parts = location.pathname.split("/").filter(Boolean);
  return Number(parts[parts.length - 1]);
}

function fmt(x, digits = 2) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  return typeof x === "number" ? x.toFixed(digits) : String(x);
}

function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%"; }

// A serial queue of server calls: answers, undos and claims reach the server in the order the
// annotator made them, while the page moves on at once.
function serialQueue() {
  let tail = Promise.resolve();
  return (fn) => { const run = tail.then(fn); tail = run.catch(() => {}); return run; };
}

// Retry a call that failed for lack of network (never one the server refused).
async function withRetry(fn, attempts = 4) {
  for (let i = 0; ; i++) {
    try { return await fn(); } catch (e) {
      if (e.status !== 0 || i >= attempts - 1) throw e;
      await new Promise((r) => setTimeout(r, 500 * (i + 1)));
    }
  }
}

function typingInField(event) {
  const t = event.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
}

// The work queue of a page that answers items one after another (annotate.js, rank.js). The page
// holds the shown item plus `prefetch` more, whose images are loaded in the background, so the next
// item appears the moment it is answered. Answers, skips, undos and claims go to the server in order
// through a serial queue, retried while the network is away; an item whose answer is still in flight
// is never shown twice. The page gives `render(task)` (draw the shown item), `imageUrls(task)` (what
// to preload), `keepImages` (how many preloaded images to keep alive), `showCount(n)` (the page's
// count of answers) and `answerPath` ("label" or "rank"); it reads `tasks.current`.
function taskQueue({ batchId, want, render, imageUrls, keepImages, showCount, answerPath, undoneMessage }) {
  const $ = (id) => document.getElementById(id);
  const send = serialQueue();
  const queue = [];            // claimed items, not shown yet
  const answered = new Set();  // assignment ids answered here (their POST may still be in flight)
  const preloaded = [];        // Image objects keep the preloaded images alive
  let pending = 0;  // server calls in flight: an empty queue then means "loading", not "done"
  let shownAt = 0;
  const tasks = { current: null, count: 0 };

  function setCount(n) {
    tasks.count = Math.max(0, n);
    showCount(tasks.count);
  }

  function preload(task) {
    for (const url of imageUrls(task)) {
      if (!url) continue;
      const img = new Image();
      img.src = url;
      preloaded.push(img);
      if (preloaded.length > keepImages) preloaded.shift();
    }
  }

  function show(task) {
    tasks.current = task || null;
    $("workspace").classList.toggle("hidden", !tasks.current);
    $("done").classList.toggle("hidden", !!tasks.current || pending > 0);
    $("loading").classList.toggle("hidden", !!tasks.current || pending === 0);
    if (!tasks.current) return;
    render(tasks.current);
    document.body.dataset.assignment = tasks.current.assignment;
    shownAt = performance.now();
  }

  // new held items from the server: queue them (and preload their images) unless already known
  function merge(claimed) {
    const known = new Set(queue.map((t) => t.assignment));
    if (tasks.current) known.add(tasks.current.assignment);
    for (const task of claimed) {
      if (known.has(task.assignment) || answered.has(task.assignment)) continue;
      queue.push(task);
      preload(task);
    }
    if (!tasks.current) show(queue.shift());
  }

  async function fill() {
    merge((await withRetry(() => api.post(`/api/batches/${batchId}/next`, { count: want }))).tasks);
  }

  function track(promise) {
    pending += 1;
    if (!tasks.current) show(null);
    return promise.finally(() => {
      pending -= 1;
      if (!tasks.current) show(queue.shift());
    });
  }

  function advance() {
    show(queue.shift());
  }

  // an answer the server refused: a conflict (409: not needed any more, or answered in another tab)
  // is said and the page moves on; for any other reason the item is shown again
  function restore(task, e) {
    setCount(tasks.count - 1);
    refused(e);
    if (e.status === 409) return;
    answered.delete(task.assignment);
    if (tasks.current) queue.unshift(tasks.current);
    show(task);
  }

  // answer the shown item with `body` (its label or ranking); the next item shows at once
  tasks.answer = (body) => {
    if (!tasks.current) return;
    const task = tasks.current;
    const duration = Math.round(performance.now() - shownAt);
    answered.add(task.assignment);
    setCount(tasks.count + 1);
    advance();
    track(send(() => withRetry(() => api.post(`/api/assignments/${task.assignment}/${answerPath}`,
      { ...body, duration_ms: duration, next: want })))
      .then((r) => merge(r.tasks))
      .catch((e) => restore(task, e)));
  };

  tasks.skip = () => {
    if (!tasks.current) return;
    const task = tasks.current;
    answered.add(task.assignment);
    toast("Skipped");
    advance();
    track(send(() => withRetry(() => api.post(`/api/assignments/${task.assignment}/skip`, { next: want })))
      .then((r) => merge(r.tasks))
      .catch(refused));
  };

  // the server reopens this user's latest answer or skip in the batch, which is shown again
  tasks.undo = () => {
    send(async () => {
      const task = await api.post(`/api/batches/${batchId}/undo`);
      answered.delete(task.assignment);
      if (tasks.current) queue.unshift(tasks.current);
      const i = queue.findIndex((t) => t.assignment === task.assignment);
      if (i >= 0) queue.splice(i, 1);
      if (task.undone === "answered") setCount(tasks.count - 1);
      show(task);
      toast(undoneMessage);
    }).catch((e) => toast(e.message, "error"));
  };

  // the first items, then keep holding them while the annotator works
  tasks.start = async (count) => {
    setCount(count);
    await track(send(fill).catch((e) => toast(e.message, "error")));
    keepHold(() => send(fill).catch(() => {}));
  };

  return tasks;
}
