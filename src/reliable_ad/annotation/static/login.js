// Login: a double-submit CSRF token (cookie + header) guards the form against login CSRF.
"use strict";
(async () => {
  const form = document.getElementById("login-form");
  const error = document.getElementById("error");
  let token = null;
  // Only a page of this site. The server answers `next` checked as a browser reads it (tabs and
  // newlines dropped, "\\" read as "/": "/\t/evil.example" means "//evil.example", another site);
  // the browser's own URL parser checks that answer once more.
  const sameSite = (path) => {
    try {
      const url = new URL(path || "/", location.origin);
      if (url.origin === location.origin) return url.href;
    } catch (e) { /* not a URL */ }
    return "/";
  };
  try { token = (await api.get("/api/login-token")).token; } catch (e) { error.textContent = e.message; }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const answer = await api.call("POST", "/api/login", {
        username: document.getElementById("username").value,
        password: document.getElementById("password").value,
        next: new URLSearchParams(location.search).get("next") || "/",
      }, { csrf: token });
      location.href = sameSite(answer && answer.next);
    } catch (e) {
      error.textContent = e.message;
      document.getElementById("password").select();
    }
  });
})();
