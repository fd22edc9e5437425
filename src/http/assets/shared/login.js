// The log-in form both pages share (`#login-form` with `#email`,
// `#password`, `#login` and `#login-error`): checks the fields, logs in,
// keeps the session in sessionStorage under the page's key, and says what
// went wrong in words a person can act on.

import { logIn, logInMessage, saveSession } from "./api.js";

const $ = (id) => document.getElementById(id);

/** Shows `text` in an alert node. */
export function showError(node, text) {
  node.textContent = text;
  node.hidden = false;
}

/**
 * Wires the form: on a successful log-in the session is saved under
 * `sessionKey` and `onSession(session)` runs; if either fails, the error
 * shows under the form and the e-mail stays as typed.
 */
export function bindLogInForm(sessionKey, onSession) {
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const email = $("email").value.trim();
    const password = $("password").value;
    const error = $("login-error");
    error.hidden = true;
    if (!email || !password) {
      showError(error, "Enter your e-mail and password.");
      return;
    }
    const button = $("login");
    button.disabled = true;
    button.textContent = "Logging in…";
    try {
      const session = await logIn(email, password);
      saveSession(sessionKey, session);
      $("password").value = "";
      await onSession(session);
    } catch (err) {
      showError(error, logInMessage(err));
    } finally {
      button.disabled = false;
      button.textContent = "Log in";
    }
  });
}
