// One deployment's page: state and phases live (server-sent events), metrics as rates over a
// window with small uPlot charts, the log without the advisor's probes, and a chat.
(function () {
  const D = window.DEPLOYMENT, ID = D.id;
  const $ = id => document.getElementById(id);
  const ENDED = ['stopped', 'failed', 'lost'];
  const csrf = () => (document.cookie.split('; ').find(c => c.startsWith('csrftoken=')) || '').split('=').slice(1).join('=');
  let state = D.state;
  // as the server writes them: 3.2×, and 1× (never 1.0× beside 1×)
  const times = x => Math.abs(x - Math.round(x)) < 0.05 ? `${Math.round(x)}×` : `${x.toFixed(1)}×`;
  const fmt = s => s < 60 ? `${Math.round(s)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;

  function tick() {
    const el = $('elapsed'), start = +el.dataset.start, end = +el.dataset.end || Date.now() / 1000;
    el.textContent = fmt(Math.max(0, end - start));
  }
  setInterval(tick, 1000); tick();

  // ------------------------------------------------------------- phases
  const NAMES = {initializing: 'initializing', downloading: 'downloading', loading_weights: 'loading weights',
    profiling: 'profiling memory', allocating_kv_cache: 'allocating the KV cache', capturing_graphs: 'capturing CUDA graphs',
    compiling: 'compiling', ready: 'ready'};
  // while a Hub model downloads: the bytes so far, from the Hugging Face cache, on the phase
  // under way (a selector list would take the first in the page: a finished "initializing").
  // vLLM 0.32 fetches the weights, the bulk, after "Starting to load model", without a line.
  const FETCHING = ['initializing', 'downloading', 'loading_weights'];
  async function refreshDownload() {
    if (ENDED.includes(state) || state === 'ready') return;
    const r = await fetch(`/api/deployments/${ID}/download`);
    if (!r.ok) return;
    const d = await r.json(), li = [...document.querySelectorAll('#phases li.current')].pop();
    if (!li || !FETCHING.includes(li.dataset.phase)) return;
    if (d.local || !d.bytes) return;
    const gib = b => (b / 2 ** 30).toFixed(2);
    li.textContent += ` · ${gib(d.bytes)}${d.expected_bytes ? ' of ' + gib(d.expected_bytes) : ''} GiB downloaded`;
  }
  setInterval(() => { if (!ENDED.includes(state) && state !== 'ready') refreshPhases().then(refreshDownload); }, 3000);

  async function refreshPhases() {
    const r = await fetch(`/api/deployments/${ID}/phases`);
    if (!r.ok) return;
    const spans = await r.json(), ol = $('phases');
    ol.innerHTML = '';
    spans.forEach((s, i) => {
      const li = document.createElement('li');
      const running = s.took_s === null && !ENDED.includes(state);
      li.className = running ? 'current' : 'done';
      li.dataset.phase = s.phase;
      li.textContent = `${NAMES[s.phase] || s.phase}` + (s.phase === 'ready' ? '' : running ? ' …' : ` ${fmt(s.took_s ?? 0)}`);
      ol.appendChild(li);
    });
  }

  // ------------------------------------------------------------- charts
  const WINDOW_S = 30, KEEP_S = 300;
  const charts = {};
  function chart(name, unit) {
    if (charts[name]) return charts[name];
    const box = document.createElement('div');
    box.className = 'chart';
    box.innerHTML = `<div class="title">${name} <span class="muted"></span></div>`;
    $('series').appendChild(box);
    const width = Math.max(200, Math.min(box.clientWidth || 280, 420));
    const data = [[], []];
    const plot = typeof uPlot === 'undefined' ? null : new uPlot({
      width, height: 120, legend: {show: false}, cursor: {show: false},
      // the last two minutes, whatever has been seen of them
      scales: {x: {time: true, range: (u, lo, hi) => [hi - 120, hi]}, y: {range: (u, lo, hi) => [0, Math.max(hi, 1)]}},
      axes: [{stroke: getComputedStyle(document.body).color, size: 30},
             {stroke: getComputedStyle(document.body).color, size: 44, label: unit, labelSize: 14}],
      series: [{}, {label: name, stroke: '#4a6fa5', width: 1.5}],
    }, data, box);
    if (plot) { plot.root.setAttribute('role', 'img'); plot.root.setAttribute('aria-label', `${name} over time, in ${unit}`); }
    return charts[name] = {box, data, plot, unit};
  }
  function record(name, value, unit) {
    if (value === null || value === undefined || Number.isNaN(value)) return;
    const c = chart(name, unit), now = Date.now() / 1000;
    c.data[0].push(now); c.data[1].push(value);
    while (c.data[0].length && c.data[0][0] < now - KEEP_S) { c.data[0].shift(); c.data[1].shift(); }
    c.box.querySelector('.muted').textContent = `${value} ${unit}`;
    if (c.plot) c.plot.setData(c.data);
  }

  // counters over a window: a reply that ends between two polls still counts
  const samples = [];
  function rate(key, m, now) {
    const prev = samples.find(s => s.t >= now - WINDOW_S) || samples[0];
    if (!prev || now - prev.t < 1) return 0;
    return Math.max(0, ((m[key] ?? 0) - (prev.m[key] ?? 0)) / (now - prev.t));
  }

  // ------------------------------------------------------------- events
  const es = new EventSource('/api/events?deployment=' + encodeURIComponent(ID));
  es.addEventListener('deployment', e => {
    const d = JSON.parse(e.data);
    const was = state;
    state = d.state;
    $('state').textContent = d.state;
    $('state').className = d.state === 'ready' ? 'ok' : (['failed', 'lost'].includes(d.state) ? 'no' : '');
    $('phase').textContent = d.phase || '';
    $('cause').textContent = d.cause || ''; $('fix').textContent = d.fix ? 'Fix: ' + d.fix : '';
    $('elapsed').dataset.end = d.ready_at || d.stopped_at || '';
    document.querySelectorAll('[data-measured]').forEach(td => {
      const k = td.dataset.measured, v = d.measured[k];
      if (v === undefined) return;
      td.textContent = k === 'max_concurrency' ? times(v) : (['kv_cache_tokens', 'max_model_len'].includes(k) ? Math.round(v).toLocaleString('en') : v);
    });
    if (ENDED.includes(d.state) && $('stop-form')) $('stop-form').remove();
    if (ENDED.includes(d.state)) es.close();
    chatReady();
    if (was !== state || d.phase) refreshPhases();
  });
  es.addEventListener('metrics', e => {
    const m = JSON.parse(e.data), now = Date.now() / 1000, rows = [];
    samples.push({t: now, m});
    while (samples.length && samples[0].t < now - KEEP_S) samples.shift();
    const val = k => m[k] ?? 0;
    const tps = rate('vllm:generation_tokens_total', m, now), pps = rate('vllm:prompt_tokens_total', m, now);
    rows.push(['running requests', val('vllm:num_requests_running')]);
    rows.push(['waiting requests', val('vllm:num_requests_waiting')]);
    rows.push(['KV-cache use', (100 * val('vllm:kv_cache_usage_perc')).toFixed(1) + ' %']);
    rows.push(['tokens/s generated', tps.toFixed(1)]);
    rows.push(['tokens/s of prompts', pps.toFixed(1)]);
    const n = val('vllm:time_to_first_token_seconds_count');
    rows.push(['time to first token (mean)', n ? (1000 * val('vllm:time_to_first_token_seconds_sum') / n).toFixed(0) + ' ms' : '–']);
    rows.push(['tokens generated', val('vllm:generation_tokens_total')]);
    $('metrics').innerHTML = rows.map(([label, v]) => `<dt>${label}</dt><dd>${v}</dd>`).join('');
    $('metrics').dataset.tps = tps.toFixed(2);
    record('tokens/s generated', +tps.toFixed(1), 'tok/s');
    record('KV-cache use', +(100 * val('vllm:kv_cache_usage_perc')).toFixed(1), '%');
  });
  es.addEventListener('gpu', e => {
    const h = JSON.parse(e.data);
    if (!h.gpus.length) {
      $('gpu').textContent = `no GPU: CPU engine · RAM ${h.ram.available_gib} GiB free of ${h.ram.total_gib}`;
      record('RAM used', +(h.ram.total_gib - h.ram.available_gib).toFixed(2), 'GiB');
    } else {
      const g = h.gpus[0];
      $('gpu').textContent = g.name;
      record('GPU utilization', g.utilization_gpu_pct, '%');
      record('GPU memory', g.memory_used_gib, 'GiB');
      record('temperature', g.temperature_c, '°C');
      record('power', g.power_draw_w, 'W');
    }
  });
  refreshPhases();

  if (!D.signedIn) return;

  // ------------------------------------------------------------- log
  async function refreshLog() {
    const r = await fetch(`/api/deployments/${ID}/logs?lines=120&probes=false`);
    if (r.ok) { const pre = $('log'); pre.textContent = await r.text(); pre.scrollTop = pre.scrollHeight; }
  }
  setInterval(() => { if (!ENDED.includes(state) || !$('log').textContent) refreshLog(); }, 2000); refreshLog();

  // ------------------------------------------------------------- chat
  let messages = [], controller = null;
  function chatReady() {
    if (!$('chat-send')) return;
    const ready = state === 'ready', busy = controller !== null;
    $('chat-send').disabled = !ready || busy;
    $('chat-in').disabled = !ready;
    $('chat-stop').disabled = !busy;
    if (!busy) $('chat-state').textContent = ready ? '' : (ENDED.includes(state)
      ? `The engine is ${state}: launch it again to talk to it.` : 'Waiting for the engine to be ready…');
  }
  function turn(role, text) {
    const div = document.createElement('div');
    div.className = 'turn ' + role;
    div.innerHTML = `<b>${role === 'user' ? 'You' : 'Model'}</b>`;
    const body = document.createElement('span');
    body.textContent = text;
    div.appendChild(body);
    $('chat-log').appendChild(div);
    return body;
  }
  async function readable(r) {
    const text = await r.text();
    try { const j = JSON.parse(text); return j.detail || j.message || j.error?.message || text; } catch (e) { return text; }
  }
  $('chat-clear').addEventListener('click', () => { messages = []; $('chat-log').innerHTML = ''; });
  $('chat-stop').addEventListener('click', () => controller && controller.abort());
  $('chat-form').addEventListener('submit', async ev => {
    ev.preventDefault();
    const text = $('chat-in').value.trim();
    if (!text || state !== 'ready' || controller) return;
    $('chat-in').value = '';
    messages.push({role: 'user', content: text});
    turn('user', text);
    const out = turn('assistant', '');
    const log = $('chat-log');
    log.dataset.done = '0';
    const system = $('chat-system').value.trim();
    const body = {model: D.model, stream: true, max_tokens: +$('chat-max').value || 256,
      temperature: +$('chat-temp').value,
      messages: system ? [{role: 'system', content: system}, ...messages] : messages};
    controller = new AbortController(); chatReady();
    $('chat-state').textContent = 'Replying…';
    let reply = '', finish = null, note = '';
    try {
      const r = await fetch('/v1/chat/completions', {method: 'POST', signal: controller.signal,
        headers: {'content-type': 'application/json', 'x-csrftoken': csrf()}, body: JSON.stringify(body)});
      if (!r.ok) {
        note = r.status === 404 ? 'The engine is no longer running: nothing answered.' : `The engine refused it (${r.status}): ${await readable(r)}`;
      } else {
        const reader = r.body.getReader(), dec = new TextDecoder(); let buf = '';
        for (;;) {
          const {value, done} = await reader.read(); if (done) break;
          buf += dec.decode(value, {stream: true});
          const parts = buf.split('\n'); buf = parts.pop();
          for (const line of parts) {
            if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
            const choice = JSON.parse(line.slice(6)).choices?.[0];
            if (choice?.delta?.content) { reply += choice.delta.content; out.textContent = reply; }
            if (choice?.finish_reason) finish = choice.finish_reason;
          }
        }
        if (finish === 'length') note = `(cut at ${body.max_tokens} tokens: raise “Max tokens per reply” for longer replies)`;
      }
    } catch (e) {
      note = e.name === 'AbortError' ? '(stopped)' : `The request failed: ${e.message}`;
    }
    if (reply) messages.push({role: 'assistant', content: reply});
    else messages.pop();  // an unanswered question is not sent again as history
    if (note) { const n = document.createElement('em'); n.className = 'muted'; n.textContent = ' ' + note; out.parentNode.appendChild(n); }
    controller = null; chatReady();
    $('chat-state').textContent = note && !reply ? note : '';
    log.dataset.done = '1';
    log.dataset.turns = String(messages.filter(m => m.role === 'assistant').length);
    log.scrollTop = log.scrollHeight;
  });
  chatReady();
})();
