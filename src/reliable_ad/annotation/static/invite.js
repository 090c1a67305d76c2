// Accept an invite: the token travels in the URL fragment, which never reaches server logs.
"use strict";
(async () => {
  const form = document.getElementById("invite-form");
  const error = document.getElementById("error");
  const invite = location.hash.slice(1);
  if (!invite) error.textContent = "This link has no invite token; ask an admin for a new link.";
  let token = null;
  try { token = (await api.get("/api/login-token")).token; } catch (e) { error.textContent = e.message; }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const password = document.getElementById("password").value;
    if (password !== document.getElementById("password2").value) {
      error.textContent = "The two passwords differ.";
      return;
    }
    try {
      await api.call("POST", "/api/invite", { token: invite, password }, { csrf: token });
      location.href = "/";
    } catch (e) { error.textContent = e.message; }
  });
})();
