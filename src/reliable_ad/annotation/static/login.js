// Login: a double-submit CSRF token (cookie + header) guards the form against login CSRF.
"use strict";
(async () => {
  const form = document.getElementById("login-form");
  const error = document.getElementById("error");
  let token = null;
  try { token = (await api.get("/api/login-token")).token; } catch (e) { error.textContent = e.message; }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      await api.call("POST", "/api/login", {
        username: document.getElementById("username").value,
        password: document.getElementById("password").value,
      }, { csrf: token });
      const next = new URLSearchParams(location.search).get("next") || "/";
      // only a path on this site: never "//host" or "https://..."
      location.href = /^\/(?![\/\\])/.test(next) ? next : "/";
    } catch (e) {
      error.textContent = e.message;
      document.getElementById("password").select();
    }
  });
})();
