// The models page: search, filter by use case, license and size, and sort, in place.
(function () {
  const tbody = document.querySelector('#models tbody');
  if (!tbody) return;
  const rows = Array.from(tbody.rows), $ = id => document.getElementById(id);
  function apply() {
    const q = $('m-q').value.trim().toLowerCase(), use = $('m-use').value, lic = $('m-license').value;
    const size = +$('m-size').value, sort = $('m-sort').value, dir = sort.startsWith('-') ? -1 : 1, key = sort.replace('-', '');
    let shown = 0;
    rows.slice().sort((a, b) => {
      const x = a.dataset[key], y = b.dataset[key];
      return dir * (key === 'name' || key === 'released' ? x.localeCompare(y) : (+x - +y));
    }).forEach(r => {
      const ok = (!q || q.split(/\s+/).every(w => r.dataset.search.includes(w))) &&
        (!use || r.dataset.strengths.split(' ').includes(use)) && (!lic || r.dataset.license === lic) &&
        (!size || +r.dataset.params <= size);
      r.hidden = !ok; if (ok) shown++;
      tbody.appendChild(r);
    });
    $('m-count').textContent = `${shown} of ${rows.length} models`;
  }
  ['m-q', 'm-use', 'm-license', 'm-size', 'm-sort'].forEach(id => $(id).addEventListener('input', apply));
  apply();
})();
