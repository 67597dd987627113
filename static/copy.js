// Copy buttons: <button class="copy" data-cmd="…">. navigator.clipboard exists only on a
// secure origin (https or localhost); elsewhere a selected textarea and execCommand('copy')
// do it. The button says what happened, and says so only when it happened.
(function () {
  function fallback(text) {
    const t = document.createElement('textarea');
    t.value = text; t.setAttribute('readonly', ''); t.style.position = 'fixed'; t.style.opacity = '0';
    document.body.appendChild(t); t.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    t.remove();
    return ok;
  }
  async function copy(text) {
    if (window.isSecureContext && navigator.clipboard) {
      try { await navigator.clipboard.writeText(text); return true; } catch (e) { /* fall back */ }
    }
    return fallback(text);
  }
  document.addEventListener('click', async ev => {
    const b = ev.target.closest('button.copy');
    if (!b) return;
    const ok = await copy(b.dataset.cmd);
    b.textContent = ok ? 'Copied' : 'Select and copy by hand';
    b.dataset.copied = ok ? '1' : '0';
    setTimeout(() => { b.textContent = 'Copy'; }, 2500);
  });
})();
