// The results table: sort by a column, filter (fits, size, quantization, license), the top
// ten first and the rest a click away. Each model is one <tbody> with data-* figures; the
// page reads the same without this script (every row shown, in rank order).
(function () {
  const table = document.getElementById('results');
  if (!table) return;
  const groups = Array.from(table.tBodies);
  const $ = id => document.getElementById(id);
  const TOP = 10;
  let key = 'rank', dir = 1, all = false;
  const text = new Set(['name']);

  function matches(g) {
    const size = +$('f-size').value, quant = $('f-quant').value, lic = $('f-license').value;
    if ($('f-fits').checked && g.dataset.fits !== '1') return false;
    if (size && +g.dataset.params > size) return false;
    if (quant && !g.dataset.quants.split(' ').includes(quant)) return false;
    if (lic && g.dataset.license !== lic) return false;
    return true;
  }

  function apply() {
    const sorted = groups.slice().sort((a, b) => {
      const x = a.dataset[key], y = b.dataset[key];
      const c = text.has(key) ? x.localeCompare(y) : (+x - +y);
      return c * dir || (+a.dataset.rank - +b.dataset.rank);
    });
    let shown = 0, matching = 0;
    for (const g of sorted) {
      table.appendChild(g);
      const ok = matches(g);
      g.classList.toggle('filtered', !ok);
      if (ok) matching++;
      const beyond = ok && !all && matching > TOP;
      g.classList.toggle('beyond', beyond);
      if (ok && !beyond) shown++;
    }
    table.classList.add('top-only');
    $('f-count').textContent = `${shown} of ${matching} matching models shown (${groups.length} in all)`;
    const more = $('show-all');
    if (more) {
      more.hidden = all || matching <= TOP;
      more.textContent = `Show all ${matching} matching models`;
    }
  }

  table.querySelectorAll('thead th[data-key]').forEach(th => {
    th.querySelector('button').addEventListener('click', () => {
      const k = th.dataset.key;
      // figures sort best first (higher score, speed, context); rank, name and size low first
      const first = ['rank', 'name', 'params', 'weights'].includes(k) ? 1 : -1;
      dir = k === key ? -dir : first;
      key = k;
      table.querySelectorAll('thead th[data-key]').forEach(o => o.removeAttribute('aria-sort'));
      th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
      apply();
    });
  });
  ['f-fits', 'f-size', 'f-quant', 'f-license'].forEach(id => $(id).addEventListener('change', apply));
  const more = $('show-all');
  if (more) more.addEventListener('click', () => { all = true; apply(); });
  apply();
})();
