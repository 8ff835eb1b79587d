// Demo client of the signaling edge: the tutorial protocol over the
// WebSocket of the host and port this page came from.
//
//   → {"type":"login","name":N}                 ← {"type":"login","success":bool}
//   → {"type":"offer","name":T,"offer":SDP}     ← {"type":"offer","offer":SDP,"name":FROM}
//   → {"type":"answer","name":T,"answer":SDP}   ← {"type":"answer","answer":SDP}
//   → {"type":"candidate","name":T,"candidate":C} ← {"type":"candidate","candidate":C}
//   → {"type":"leave","name":T}                 ← {"type":"leave"}
//                                               ← {"type":"error","message":M}
//
// Tests drive and watch it through window.signalDemo (see the bottom) and
// the data-testid attributes of index.html.
//
// Query parameters: ?name=N logs in as N at once; ?ice=URL (repeatable)
// adds an ICE server (none by default: host candidates only, which is all
// a LAN or loopback call needs and keeps the page free of outside hosts).
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status-text'),
    loginForm: $('login-form'),
    name: $('name'),
    loginBtn: $('login'),
    whoami: $('whoami'),
    callForm: $('call-form'),
    peer: $('peer'),
    callBtn: $('call'),
    hangupBtn: $('hangup'),
    callInfo: $('call-info'),
    notice: $('notice'),
    error: $('error'),
    errorText: $('error-text'),
    errorClose: $('error-close'),
    localVideo: $('local-video'),
    localLabel: $('local-label'),
    localPlaceholder: $('local-placeholder'),
    remoteVideo: $('remote-video'),
    remoteLabel: $('remote-label'),
    remotePlaceholder: $('remote-placeholder'),
    unmute: $('unmute'),
    log: $('log'),
  };

  const params = new URLSearchParams(location.search);
  const urlIceServers = params.getAll('ice').filter(Boolean).map((urls) => ({ urls }));
  let loginIceServers = []; // "iceServers" of the login reply (TURN), if the edge sends them

  // Reconnect backoff after the socket closes (ms): 1001 (edge going away)
  // retries at once, since a load balancer sends us to another edge.
  const RECONNECT_MIN = 200;
  const RECONNECT_MAX = 5000;
  // A re-login right after a reconnect may find the name still held for a
  // moment by the old connection: try this often, RELOGIN_DELAY more apart
  // each time (about 9 s in all; the edge allows 20 logins per connection).
  const RELOGIN_TRIES = 8;
  const RELOGIN_DELAY = 250;

  // Everything a test may look at. state is one of:
  //   offline     no signaling connection
  //   online      connected, not logged in
  //   idle        logged in, no call
  //   calling     offer sent, waiting for the answer
  //   answering   offer received, answering (auto-accept)
  //   connecting  offer and answer exchanged, ICE not yet connected
  //   in-call     media connected
  //   ended       the call is over (see reason); a new one may start
  const demo = {
    state: 'offline',
    socket: 'closed', // connecting | open | closed
    url: '',
    name: '', // logged-in name ('' when not logged in)
    loggedIn: false,
    peer: '', // the other user of the current or last call
    pc: null, // RTCPeerConnection of the current or last call
    role: '', // caller | callee
    media: 'pending', // pending | camera+microphone | camera | microphone | receive-only
    localStream: null,
    remoteStream: null,
    reason: '', // why the last call ended
    incoming: null, // {from, at} of the last incoming call
    errors: [], // every error shown, oldest first
    events: [], // every log line, oldest first
    closes: [], // {code, reason} of every socket close
    logins: 0, // successful logins (a re-login after a reconnect counts)
    resumes: 0, // logins that resumed the session (and call) of a dropped connection
    reconnects: 0,
    callStartedAt: 0, // performance.now() when the offer was sent or received
    callToConnectedMs: null, // offer to connectionState "connected"
    login: (name) => login(name),
    call: (name) => startCall(name),
    hangup: () => hangup(),
    send: (msg) => send(msg),
    stats: () => (demo.pc ? demo.pc.getStats() : Promise.resolve(new Map())),
  };
  window.signalDemo = demo;

  // ---- display ----------------------------------------------------------

  function log(text) {
    const line = `${new Date().toISOString().slice(11, 23)} ${text}`;
    demo.events.push(line);
    const li = document.createElement('li');
    li.textContent = line;
    ui.log.prepend(li);
    while (ui.log.childElementCount > 200) ui.log.lastElementChild.remove();
  }

  function showError(text) {
    demo.errors.push(text);
    ui.errorText.textContent = text;
    ui.error.hidden = false;
    log(`error: ${text}`);
  }

  function notice(text, kind = 'info') {
    ui.notice.textContent = text;
    ui.notice.dataset.kind = kind;
    ui.notice.hidden = !text;
    if (text) log(text);
  }

  function setState(s) {
    if (demo.state !== s) log(`state: ${demo.state} → ${s}`);
    demo.state = s;
    render();
  }

  const stateText = {
    offline: 'not connected',
    online: 'not logged in',
    idle: 'ready: call someone',
    calling: 'calling',
    answering: 'incoming call from',
    connecting: 'connecting to',
    'in-call': 'in call with',
    ended: 'call ended',
  };

  function render() {
    const s = demo.state;
    document.body.dataset.state = s;
    document.body.dataset.socket = demo.socket;
    const parts = [];
    if (demo.socket === 'open') parts.push('signaling connected');
    else if (demo.socket === 'connecting') parts.push(demo.reconnects ? 'reconnecting…' : 'connecting…');
    else parts.push('signaling offline');
    if (demo.loggedIn) parts.push(`logged in as ${demo.name}`);
    let st = stateText[s] || s;
    if (['calling', 'answering', 'connecting', 'in-call'].includes(s)) st += ` ${demo.peer}`;
    if (s === 'ended' && demo.reason) st += `: ${demo.reason}`;
    if (s !== 'offline' && s !== 'online') parts.push(st);
    ui.status.textContent = parts.join(' · ');

    const inCall = !!active;
    const relogging = !demo.loggedIn && demo.logins > 0 && !!wantName;
    ui.loginForm.hidden = demo.loggedIn || relogging;
    ui.whoami.hidden = !demo.loggedIn && !relogging;
    if (demo.loggedIn) ui.whoami.textContent = `Logged in as ${demo.name} (${demo.media})`;
    else if (relogging) ui.whoami.textContent = `Reconnecting as ${wantName}…`;
    ui.callBtn.disabled = !demo.loggedIn || inCall || demo.socket !== 'open';
    ui.hangupBtn.disabled = !inCall;
    ui.peer.disabled = inCall;
    ui.localLabel.textContent = demo.name ? `You (${demo.name})` : 'You';
    ui.remoteLabel.textContent = inCall ? demo.peer : s === 'ended' ? `${demo.peer} (call ended)` : 'Peer';
    ui.remotePlaceholder.textContent = inCall ? (s === 'in-call' ? 'no video from peer' : `${stateText[s]} ${demo.peer}…`) : 'no call';
    ui.remotePlaceholder.hidden = inCall && hasVideo(demo.remoteStream);
    ui.localPlaceholder.hidden = hasVideo(demo.localStream);
    ui.localPlaceholder.textContent = demo.media === 'pending' ? 'camera off' : 'no camera (receive-only)';
  }

  // The call-info line says who called whom for as long as the call lasts,
  // and how it ended afterwards.
  function setCallInfo(text, kind) {
    ui.callInfo.textContent = text;
    ui.callInfo.dataset.kind = kind;
    ui.callInfo.hidden = !text;
  }

  function hasVideo(stream) {
    return !!stream && stream.getVideoTracks().length > 0;
  }

  ui.errorClose.addEventListener('click', () => { ui.error.hidden = true; });

  // ---- signaling socket -------------------------------------------------

  let ws = null;
  let wantName = ''; // the name to log in as (again, after a reconnect)
  let loginPending = null; // {name, auto, tries}
  let resumeToken = ''; // of the current session: a login after a reconnect presents it
  let resumeName = '';
  let retry = 0;
  let retryTimer = 0;
  let unloading = false;
  let inbox = Promise.resolve(); // messages are handled one at a time, in order

  function wsURL() {
    const u = new URL('.', location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.search = '';
    u.hash = '';
    return u.href;
  }

  function connect() {
    clearTimeout(retryTimer);
    demo.url = wsURL();
    demo.socket = 'connecting';
    render();
    const s = new WebSocket(demo.url);
    ws = s;
    s.onopen = () => {
      if (ws !== s) return;
      retry = 0;
      demo.socket = 'open';
      log(`signaling connected to ${demo.url}`);
      if (active) render(); // a call that outlived the drop goes on
      else setState('online');
      if (wantName) sendLogin(wantName, demo.logins > 0);
    };
    s.onmessage = (ev) => {
      if (ws !== s) return;
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        log(`ignored a frame that is not JSON: ${String(ev.data).slice(0, 80)}`);
        return;
      }
      if (!m || typeof m !== 'object') {
        log('ignored a frame that is not a JSON object');
        return;
      }
      inbox = inbox.then(() => handle(m)).catch((err) => showError(`handling ${m.type}: ${err.message || err}`));
    };
    s.onclose = (ev) => {
      if (ws !== s) return;
      ws = null;
      socketClosed(ev);
    };
  }

  function socketClosed(ev) {
    demo.closes.push({ code: ev.code, reason: ev.reason });
    demo.socket = 'closed';
    const was = demo.loggedIn;
    demo.loggedIn = false;
    loginPending = null;
    const why = `${ev.code}${ev.reason ? ` ${ev.reason}` : ''}`;
    // Only a dropped connection (1006: no close frame) keeps the session:
    // the edge holds the name for a grace period, and a login with the
    // resume token takes it back, peer and all, so the call goes on (its
    // media never passed through the edge). After a close frame the edge
    // has released the name and told our peer "leave".
    const keep = ev.code === 1006 && was && !!resumeToken;
    if (active && !keep) endCall(`signaling connection closed (${why})`, false);
    if (active) render();
    else setState('offline');
    if (unloading) return;
    if (ev.code === 4002) {
      // Our session was resumed on another connection: that one owns it.
      wantName = '';
      showError(`signaling closed (${why}): this session continues on another connection`);
      return;
    }
    let delay = Math.min(RECONNECT_MAX, RECONNECT_MIN * 2 ** retry);
    const again = wantName ? ` and logging in again as ${wantName}` : '';
    if (ev.code === 1001) {
      // The edge is shutting down: a load balancer sends us to another
      // one, so try again at once.
      if (retry === 0) delay = 0;
      notice(`the edge is going away (${why}): reconnecting${again}…`, 'warn');
    } else if (active) {
      notice(`signaling connection lost (${why}): reconnecting to resume the session; the call goes on…`, 'warn');
    } else if (was || retry === 0) {
      notice(`signaling connection closed (${why}): reconnecting${again}…`, 'warn');
    }
    delay += Math.random() * Math.min(delay, 500) * 0.5;
    retry++;
    demo.reconnects++;
    retryTimer = setTimeout(connect, delay);
    demo.socket = 'connecting';
    render();
  }

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      showError(`not connected: ${msg.type} not sent`);
      return false;
    }
    ws.send(JSON.stringify(msg));
    return true;
  }

  // ---- login ------------------------------------------------------------

  function login(name) {
    if (loginPending) return; // one at a time
    name = String(name ?? '').trim();
    if (!name) {
      showError('enter a name to log in');
      return;
    }
    if (demo.loggedIn) {
      showError(`already logged in as ${demo.name}`);
      return;
    }
    wantName = name;
    if (demo.socket === 'open') sendLogin(name, false);
    else notice(`will log in as ${name} once connected…`);
  }

  function sendLogin(name, auto, tries = 0) {
    loginPending = { name, auto, tries };
    // Resumable: a dropped connection's session (and call) is held for
    // the edge's grace period, frames for it kept, so that this page can
    // take it back with the token of the reply.
    const msg = { type: 'login', name, resumable: true };
    if (auto && resumeToken && resumeName === name) msg.resume = resumeToken;
    log(`logging in as ${name}${auto ? ` (again, after reconnecting${msg.resume ? ', with the resume token' : ''})` : ''}`);
    send(msg);
  }

  function onLogin(m) {
    const p = loginPending;
    loginPending = null;
    if (!p) {
      log('login reply without a login pending: ignored');
      return;
    }
    if (m.success === true) {
      demo.loggedIn = true;
      demo.name = p.name;
      demo.logins++;
      // The token rotates with every login; extra fields are the edge's,
      // beyond the tutorial protocol.
      resumeToken = typeof m.resume === 'string' ? m.resume : '';
      resumeName = p.name;
      if (Array.isArray(m.iceServers)) loginIceServers = m.iceServers;
      const resumed = m.resumed === true;
      if (resumed) demo.resumes++;
      if (active && !resumed) {
        // A new session: the old one was released and our peer told.
        endCall('the call was lost while reconnecting', false);
      }
      if (!p.auto) notice(`logged in as ${p.name}`);
      else if (resumed) notice(`reconnected: session resumed as ${p.name}${active ? `; the call with ${active.peer} goes on` : ''}`);
      else notice(`reconnected and logged in again as ${p.name}`);
      if (active) render();
      else setState('idle');
      startMedia();
      return;
    }
    if (p.auto && m.message === 'resume token does not match') resumeToken = '';
    if (p.auto && p.tries < RELOGIN_TRIES) {
      // The old connection's name may not be released yet.
      setTimeout(() => {
        if (demo.socket === 'open' && !demo.loggedIn && wantName === p.name) sendLogin(p.name, true, p.tries + 1);
      }, RELOGIN_DELAY * (p.tries + 1));
      return;
    }
    wantName = '';
    showError(`login as "${p.name}" refused: ${m.message || 'the name is taken'}`);
    render();
  }

  // ---- media ------------------------------------------------------------

  let mediaPromise = null;

  function startMedia() {
    if (!mediaPromise) mediaPromise = getMedia();
    return mediaPromise;
  }

  async function getMedia() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      demo.media = 'receive-only';
      notice('no camera access here (pages need https or localhost for it): calls are receive-only', 'warn');
      render();
      return null;
    }
    const tries = [
      [{ video: true, audio: true }, 'camera+microphone'],
      [{ video: true }, 'camera'],
      [{ audio: true }, 'microphone'],
    ];
    let last = null;
    for (const [constraints, what] of tries) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia(constraints);
        demo.localStream = stream;
        demo.media = what;
        ui.localVideo.srcObject = stream;
        log(`local media: ${what}`);
        render();
        return stream;
      } catch (err) {
        last = err;
      }
    }
    demo.media = 'receive-only';
    notice(`no camera or microphone (${last && (last.name || last.message)}): calls are receive-only`, 'warn');
    render();
    return null;
  }

  // ---- calls ------------------------------------------------------------

  // active is the current call: {peer, pc, role, descSent, outCands, inCands}.
  let active = null;

  function newCall(peer, role) {
    const pc = new RTCPeerConnection({ iceServers: [...loginIceServers, ...urlIceServers] });
    const c = { peer, pc, role, descSent: false, outCands: [], inCands: [] };
    active = c;
    ui.error.hidden = true; // errors of an earlier call are old news
    demo.pc = pc;
    demo.peer = peer;
    demo.role = role;
    demo.reason = '';
    demo.callToConnectedMs = null;
    demo.remoteStream = new MediaStream();
    ui.remoteVideo.srcObject = demo.remoteStream;
    ui.unmute.hidden = true;
    setCallInfo(role === 'caller' ? `→ You called ${peer}` : `☎ Incoming call from ${peer}: accepted automatically`, role);

    pc.onicecandidate = (ev) => {
      // A null candidate (end of candidates) is not sent: the tutorial
      // clients never did, and ICE completes without it.
      if (active !== c || !ev.candidate) return;
      if (c.descSent) send({ type: 'candidate', name: c.peer, candidate: ev.candidate });
      else c.outCands.push(ev.candidate);
    };
    pc.ontrack = (ev) => {
      if (active !== c) return;
      demo.remoteStream.addTrack(ev.track);
      log(`remote ${ev.track.kind} track`);
      playRemote();
      ev.track.onunmute = () => render();
      render();
    };
    pc.oniceconnectionstatechange = () => log(`ICE ${pc.iceConnectionState}`);
    pc.onconnectionstatechange = () => {
      const st = pc.connectionState;
      log(`connection ${st}`);
      if (active !== c) return;
      if (st === 'connected') {
        if (demo.callToConnectedMs === null && demo.callStartedAt) {
          demo.callToConnectedMs = Math.round(performance.now() - demo.callStartedAt);
          log(`connected ${demo.callToConnectedMs} ms after the offer`);
        }
        notice(demo.callToConnectedMs === null ? `in call with ${c.peer}` : `in call with ${c.peer}: connected ${demo.callToConnectedMs} ms after the offer`);
        setState('in-call');
      } else if (st === 'failed') {
        endCall('the connection failed (no route between the peers?)', true);
      } else if (st === 'disconnected') {
        notice(`connection to ${c.peer} interrupted…`, 'warn');
      }
    };
    return c;
  }

  function addMedia(pc, stream) {
    if (stream) {
      for (const track of stream.getTracks()) pc.addTrack(track, stream);
    }
    // Receive audio and video even without a device of that kind. On the
    // answering side the offer's transceivers already exist.
    const kinds = new Set(pc.getTransceivers().map((t) => t.receiver.track.kind));
    for (const kind of ['audio', 'video']) {
      if (!kinds.has(kind)) pc.addTransceiver(kind, { direction: 'recvonly' });
    }
  }

  function descSent(c) {
    c.descSent = true;
    for (const cand of c.outCands) send({ type: 'candidate', name: c.peer, candidate: cand });
    c.outCands = [];
  }

  async function drainCandidates(c) {
    const list = c.inCands;
    c.inCands = [];
    for (const cand of list) await addCandidate(c, cand);
  }

  async function addCandidate(c, cand) {
    try {
      await c.pc.addIceCandidate(cand);
    } catch (err) {
      log(`candidate not usable: ${err.message || err}`);
    }
  }

  async function startCall(peer) {
    peer = String(peer ?? '').trim();
    if (!demo.loggedIn) return showError('log in first');
    if (!peer) return showError('enter the name of the user to call');
    if (peer === demo.name) return showError('you cannot call yourself');
    if (active) return showError(`already in a call with ${active.peer}`);
    ui.peer.value = peer;
    const c = newCall(peer, 'caller');
    notice(`calling ${peer}…`);
    setState('calling');
    try {
      const stream = await startMedia();
      if (active !== c) return;
      addMedia(c.pc, stream);
      await c.pc.setLocalDescription(await c.pc.createOffer());
      if (active !== c) return;
      demo.callStartedAt = performance.now();
      if (!send({ type: 'offer', name: peer, offer: c.pc.localDescription })) {
        endCall('not connected', false);
        return;
      }
      descSent(c);
    } catch (err) {
      showError(`call failed: ${err.message || err}`);
      if (active === c) endCall(`call failed: ${err.message || err}`, true);
    }
  }

  function hangup() {
    if (!active) return;
    endCall('you hung up', true);
  }

  function endCall(reason, sendLeave) {
    const c = active;
    if (!c) return;
    active = null;
    if (sendLeave && demo.socket === 'open') send({ type: 'leave', name: c.peer });
    c.pc.close();
    ui.remoteVideo.srcObject = null;
    ui.unmute.hidden = true;
    demo.reason = reason;
    setCallInfo(`${c.role === 'caller' ? '→ You called' : '☎ Call from'} ${c.peer} · ended: ${reason}`, 'ended');
    notice(`call with ${c.peer} ended: ${reason}`, 'warn');
    setState(demo.loggedIn ? 'ended' : 'offline');
  }

  function playRemote() {
    const v = ui.remoteVideo;
    const p = v.play();
    if (!p) return;
    p.catch(() => {
      // Autoplay with sound needs a user gesture: play muted, offer unmute.
      v.muted = true;
      ui.unmute.hidden = false;
      v.play().catch(() => {});
    });
  }

  ui.unmute.addEventListener('click', () => {
    ui.remoteVideo.muted = false;
    ui.unmute.hidden = true;
    ui.remoteVideo.play().catch(() => {});
  });

  // ---- incoming messages --------------------------------------------------

  async function handle(m) {
    switch (m.type) {
      case 'login':
        return onLogin(m);
      case 'offer':
        return onOffer(m);
      case 'answer':
        return onAnswer(m);
      case 'candidate':
        return onCandidate(m);
      case 'leave':
        return onLeave();
      case 'error':
        return onError(m);
      default:
        log(`ignored a message of type ${JSON.stringify(m.type)}`);
    }
  }

  async function onOffer(m) {
    const from = String(m.name ?? '');
    if (!demo.loggedIn || !from || !m.offer) {
      log('ignored an offer (not logged in, or no sender or offer)');
      return;
    }
    let c = active;
    if (c && c.peer !== from) {
      notice(`${from} called, but you are in a call with ${c.peer}: declined`, 'warn');
      send({ type: 'leave', name: from });
      return;
    }
    if (c && c.pc.signalingState === 'have-local-offer') {
      // Both called each other at once: the smaller name's offer wins.
      if (demo.name < from) {
        log(`${from} called us while we called them: keeping our offer`);
        return;
      }
      log(`${from} called us while we called them: taking their offer`);
      active = null;
      c.pc.close();
      c = null;
    }
    if (!c) {
      c = newCall(from, 'callee');
      demo.incoming = { from, at: Date.now() };
      demo.callStartedAt = performance.now();
      notice(`☎ incoming call from ${from}: answering automatically`, 'call');
      setState('answering');
    }
    try {
      await c.pc.setRemoteDescription(m.offer);
      if (active !== c) return;
      await drainCandidates(c);
      if (!c.mediaAdded) {
        c.mediaAdded = true;
        const stream = await startMedia();
        if (active !== c) return;
        addMedia(c.pc, stream);
      }
      await c.pc.setLocalDescription(await c.pc.createAnswer());
      if (active !== c) return;
      if (!send({ type: 'answer', name: from, answer: c.pc.localDescription })) return;
      descSent(c);
      if (demo.state === 'answering') setState('connecting');
    } catch (err) {
      showError(`answering ${from} failed: ${err.message || err}`);
      if (active === c) endCall(`answering failed: ${err.message || err}`, true);
    }
  }

  async function onAnswer(m) {
    const c = active;
    if (!c || c.pc.signalingState !== 'have-local-offer' || !m.answer) {
      log('ignored an answer (no call waiting for one)');
      return;
    }
    try {
      await c.pc.setRemoteDescription(m.answer);
      if (active !== c) return;
      await drainCandidates(c);
      if (demo.state === 'calling') setState('connecting');
    } catch (err) {
      showError(`bad answer from ${c.peer}: ${err.message || err}`);
      if (active === c) endCall('bad answer', true);
    }
  }

  async function onCandidate(m) {
    const c = active;
    if (!c) {
      log('ignored a candidate (no call)');
      return;
    }
    if (!m.candidate) return; // end of candidates
    if (!c.pc.remoteDescription) {
      c.inCands.push(m.candidate);
      return;
    }
    await addCandidate(c, m.candidate);
  }

  function onLeave() {
    if (!active) {
      log('leave received (no call)');
      return;
    }
    endCall(`${active.peer} left`, false);
  }

  function onError(m) {
    const text = String(m.message ?? 'unknown error');
    showError(text);
    const c = active;
    // A call to someone who is not online ends right here. (Once media
    // flows, the call no longer needs signaling: the peer may just be
    // reconnecting.)
    if (c && demo.state !== 'in-call' && text.includes(`"${c.peer}"`) && /not online/.test(text)) {
      endCall(`${c.peer} is not online`, false);
    }
    if (loginPending && /^login failed|unavailable/.test(text)) {
      const p = loginPending;
      loginPending = null;
      if (p.auto && p.tries < RELOGIN_TRIES) {
        setTimeout(() => {
          if (demo.socket === 'open' && !demo.loggedIn) sendLogin(p.name, true, p.tries + 1);
        }, RELOGIN_DELAY * 4);
      }
    }
  }

  // ---- controls -----------------------------------------------------------

  ui.loginForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    login(ui.name.value);
  });
  ui.callForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    startCall(ui.peer.value);
  });
  ui.hangupBtn.addEventListener('click', hangup);
  window.addEventListener('pagehide', () => {
    unloading = true;
    if (active && demo.socket === 'open') send({ type: 'leave', name: active.peer });
    if (ws) ws.close(1000, 'page closed');
  });
  window.addEventListener('pageshow', (ev) => {
    // Back from the back/forward cache: the socket was closed on the way out.
    if (!ev.persisted) return;
    unloading = false;
    if (!ws) connect();
  });

  const preset = params.get('name');
  if (preset) {
    ui.name.value = preset;
    wantName = preset.trim();
  }
  render();
  connect();
})();
