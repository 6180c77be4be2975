// Security-key ceremonies for the sign-in, re-authentication and security pages.
// Talks JSON to the broker, which keeps the ceremony state server-side.
const b64urlToBytes = (s) => {
  const pad = '='.repeat((4 - (s.length % 4)) % 4);
  const bin = atob((s + pad).replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
};
const bytesToB64url = (buf) => {
  const bytes = new Uint8Array(buf);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
};
const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || '';

async function post(url, body) {
  const res = await fetch(url, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf() },
    body: JSON.stringify(body || {}),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error(data.error || 'Une erreur est survenue. Réessayez.');
    err.redirect = data.redirect;
    throw err;
  }
  return data;
}

function showError(message) {
  const box = document.getElementById('cle-erreur');
  if (!box) return;
  box.querySelector('p').textContent = message;
  box.hidden = false;
  box.focus?.();
}

const CANCELLED = "L'opération a été annulée ou le délai est dépassé. Réessayez en touchant votre clé quand elle clignote.";

/** The browser's credential as the broker expects it (binary fields in base64url). */
function encodeCredential(cred, response) {
  return { id: cred.id, rawId: bytesToB64url(cred.rawId), type: cred.type, extensions: {}, response };
}

/**
 * Runs one ceremony: asks the broker for options, lets the browser talk to the key,
 * sends the result, and follows the redirect the broker answers with.
 */
async function ceremony(optionsUrl, optionsBody, prepare, callBrowser, encode, finishUrl, finishBody) {
  try {
    const options = await post(optionsUrl, optionsBody);
    const pk = options.publicKey;
    pk.challenge = b64urlToBytes(pk.challenge);
    prepare(pk);
    let cred;
    try {
      cred = await callBrowser(pk);
    } catch (e) {
      showError(CANCELLED);
      return;
    }
    const done = await post(finishUrl, { ...finishBody, credential: encodeCredential(cred, encode(cred.response)) });
    window.location.assign(done.redirect);
  } catch (e) {
    if (e.redirect) window.location.assign(e.redirect);
    else showError(e.message);
  }
}

function assertion(button) {
  return ceremony(
    button.dataset.options,
    {},
    (pk) => (pk.allowCredentials || []).forEach((c) => { c.id = b64urlToBytes(c.id); }),
    (pk) => navigator.credentials.get({ publicKey: pk }),
    (r) => ({
      authenticatorData: bytesToB64url(r.authenticatorData),
      clientDataJSON: bytesToB64url(r.clientDataJSON),
      signature: bytesToB64url(r.signature),
      userHandle: r.userHandle ? bytesToB64url(r.userHandle) : null,
    }),
    button.dataset.finish,
    { suite: button.dataset.suite },
  );
}

function registration(button) {
  const name = document.getElementById('nom-cle');
  if (!name.value.trim()) {
    showError('Donnez un nom à la clé, par exemple « Clé bleue du bureau ».');
    name.focus();
    return undefined;
  }
  return ceremony(
    button.dataset.options || '/espace/securite/cles/options',
    { name: name.value },
    (pk) => {
      pk.user.id = b64urlToBytes(pk.user.id);
      (pk.excludeCredentials || []).forEach((c) => { c.id = b64urlToBytes(c.id); });
    },
    (pk) => navigator.credentials.create({ publicKey: pk }),
    (r) => ({
      attestationObject: bytesToB64url(r.attestationObject),
      clientDataJSON: bytesToB64url(r.clientDataJSON),
      transports: r.getTransports ? r.getTransports() : undefined,
    }),
    button.dataset.finish || '/espace/securite/cles',
    {},
  );
}

document.getElementById('connexion-cle')?.addEventListener('click', (e) => assertion(e.currentTarget));
document.getElementById('ajout-cle')?.addEventListener('click', (e) => registration(e.currentTarget));
