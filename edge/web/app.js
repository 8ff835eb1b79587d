// Demo client of the signaling edge, built on signal.js (served beside it).
//
// One-to-one: log in, type a name, Call. It speaks only the tutorial
// protocol (login, offer, answer, candidate, leave), plus a resumable login.
// Room: join a room and the page calls every member (a mesh: one
// RTCPeerConnection per member; you and up to three others in four tiles).
// To avoid glare, whoever joins later offers to those already in the room
// (the join reply's users), and the others answer. A member that parts or
// leaves ends only the connection with that member. Presence: watch a few
// names and see them come and go.
//
// Tests drive and watch it through window.signalDemo (see below) and the
// data-testid attributes of index.html.
//
// Query parameters: ?name=N logs in as N at once, ?room=R then joins R;
// ?ice=URL (repeatable) adds an ICE server (none by default: host
// candidates only, which is all a LAN or loopback call needs and keeps the
// page free of outside hosts).
import { Signal } from './signal.js';

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status-text'),
  loginForm: $('login-form'),
  name: $('name'),
  whoami: $('whoami'),
  callForm: $('call-form'),
  peer: $('peer'),
  callBtn: $('call'),
  hangupBtn: $('hangup'),
  roomForm: $('room-form'),
  room: $('room'),
  joinBtn: $('join'),
  partBtn: $('part'),
  watchForm: $('watch-form'),
  watchNames: $('watch-names'),
  watchBtn: $('watch'),
  members: $('members'),
  presence: $('presence'),
  callInfo: $('call-info'),
  notice: $('notice'),
  error: $('error'),
  errorText: $('error-text'),
  errorClose: $('error-close'),
  videos: $('videos'),
  localVideo: $('local-video'),
  localLabel: $('local-label'),
  localPlaceholder: $('local-placeholder'),
  remoteFigure: $('remote'),
  remoteVideo: $('remote-video'),
  remoteLabel: $('remote-label'),
  remotePlaceholder: $('remote-placeholder'),
  unmute: $('unmute'),
  log: $('log'),
};

const params = new URLSearchParams(location.search);
const urlIceServers = params.getAll('ice').filter(Boolean).map((urls) => ({ urls }));
const MAX_PEERS = 3; // room tiles: you and up to three others
const HOLD_OFFER = 5000; // ms an offer may wait for its sender's "joined"

const sig = new Signal();

// Everything a test may look at. state is one of:
//   offline     no signaling connection
//   online      connected, not logged in
//   idle        logged in, no call
//   calling     offer sent, waiting for the answer
//   answering   offer received, answering (auto-accept)
//   connecting  offer and answer exchanged, ICE not yet connected
//   in-call     media connected
//   ended       the call is over (see reason); a new one may start
//   room        in a room (demo.room), calling its members
const demo = {
  state: 'offline',
  socket: 'closed', // connecting | open | closed
  url: sig.url,
  name: '', // logged-in name ('' before the first login)
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
  room: '', // the room joined ('' when none)
  roomLog: [], // {type: joined | parted | leave, name} in the room; leave's name may be null
  meshStartedAt: 0, // performance.now() at the join reply
  meshConnectedMs: null, // join reply to every member's connection "connected"
  meshTimes: {}, // name → ms after the join reply: offered | offer, answer | answered, connected
  sig,
  login: (name) => login(name),
  call: (name) => startCall(name),
  hangup: () => hangup(),
  send: (msg) => sig.send(msg),
  stats: () => (demo.pc ? demo.pc.getStats() : Promise.resolve(new Map())),
  join: (room) => joinRoom(room),
  part: () => partRoom(),
  watch: (names) => watchNames(names),
  presence: () => Object.fromEntries(sig.presence),
  members: () => [...(sig.rooms.get(demo.room) || [])],
  meshPeers: () => [...mesh.values()].map((p) => ({ name: p.name, role: p.role, connection: p.pc.connectionState, ice: p.pc.iceConnectionState })),
  meshBytes: () => meshBytes(),
};
window.signalDemo = demo;

// ---- display ------------------------------------------------------------

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
  idle: 'ready: call someone or join a room',
  calling: 'calling',
  answering: 'incoming call from',
  connecting: 'connecting to',
  'in-call': 'in call with',
  ended: 'call ended',
  room: 'in room',
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
  if (s === 'room') st += ` ${demo.room}`;
  if (s === 'ended' && demo.reason) st += `: ${demo.reason}`;
  if (s !== 'offline' && s !== 'online') parts.push(st);
  ui.status.textContent = parts.join(' · ');

  const inCall = !!active;
  const inRoom = !!demo.room;
  const relogging = !demo.loggedIn && demo.logins > 0 && !!sig.name;
  ui.loginForm.hidden = demo.loggedIn || relogging;
  ui.whoami.hidden = !demo.loggedIn && !relogging;
  if (demo.loggedIn) ui.whoami.textContent = `Logged in as ${demo.name} (${demo.media})`;
  else if (relogging) ui.whoami.textContent = `Reconnecting as ${sig.name}…`;
  const ready = demo.loggedIn && demo.socket === 'open';
  ui.callBtn.disabled = !ready || inCall || inRoom;
  ui.hangupBtn.disabled = !inCall;
  ui.peer.disabled = inCall || inRoom;
  ui.joinBtn.disabled = !ready || inCall || inRoom;
  ui.partBtn.disabled = !inRoom;
  ui.room.disabled = inRoom;
  ui.watchBtn.disabled = !ready;
  ui.localLabel.textContent = demo.name ? `You (${demo.name})` : 'You';
  ui.remoteFigure.hidden = inRoom;
  ui.remoteLabel.textContent = inCall ? demo.peer : s === 'ended' ? `${demo.peer} (call ended)` : 'Peer';
  ui.remotePlaceholder.textContent = inCall ? (s === 'in-call' ? 'no video from peer' : `${stateText[s]} ${demo.peer}…`) : 'no call';
  ui.remotePlaceholder.hidden = inCall && hasVideo(demo.remoteStream);
  ui.localPlaceholder.hidden = hasVideo(demo.localStream);
  ui.localPlaceholder.textContent = demo.media === 'pending' ? 'camera off' : 'no camera (receive-only)';
  renderMembers();
}

function renderMembers() {
  const items = [];
  for (const name of demo.members()) {
    const p = mesh.get(name);
    const li = document.createElement('li');
    li.dataset.testid = 'member';
    li.dataset.name = name;
    li.dataset.connection = p ? p.pc.connectionState : 'none';
    li.textContent = p ? `${name} · ${p.pc.connectionState}` : `${name} · not called`;
    items.push(li);
  }
  ui.members.replaceChildren(...items);
  ui.members.hidden = !demo.room;
}

function renderPresence() {
  const items = [];
  for (const [name, online] of sig.presence) {
    const li = document.createElement('li');
    li.dataset.testid = 'presence-item';
    li.dataset.name = name;
    li.dataset.online = String(online);
    li.textContent = `${name}: ${online ? 'online' : 'offline'}`;
    items.push(li);
  }
  ui.presence.replaceChildren(...items);
  ui.presence.hidden = items.length === 0;
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

// ---- signaling ------------------------------------------------------------

let unloading = false;
let loginPending = false;
let inbox = Promise.resolve(); // signaling events are handled one at a time, in order

// inOrder runs fn(detail) after the events before it are handled (an
// answer must wait for the offer's setRemoteDescription).
const inOrder = (fn) => (d) => {
  inbox = inbox.then(() => fn(d)).catch((err) => showError(`handling ${d.type}: ${err.message || err}`));
};

sig.on('open', () => {
  demo.socket = 'open';
  log(`signaling connected to ${sig.url}`);
  if (active || demo.room) render(); // a call that outlived the drop goes on
  else setState(demo.loggedIn ? 'idle' : 'online');
});

sig.on('reconnecting', ({ delay }) => {
  demo.socket = 'connecting';
  demo.reconnects++;
  log(`reconnecting in ${Math.round(delay)} ms`);
  render();
});

sig.on('close', ({ code, reason, resuming, reconnecting }) => {
  demo.closes.push({ code, reason });
  demo.socket = 'closed';
  const was = demo.loggedIn;
  demo.loggedIn = false;
  const why = `${code}${reason ? ` ${reason}` : ''}`;
  // Only a dropped connection (1006: no close frame) keeps the session:
  // the edge holds it for a grace period, and signal.js takes it back with
  // the resume token, peers and rooms and all, so the calls go on (their
  // media never passed through the edge). After a close frame the edge has
  // released the name and told our peers "leave".
  if (!resuming) {
    if (active) endCall(`signaling connection closed (${why})`, false);
    endMesh(`signaling connection closed (${why})`);
    if (!reconnecting) demo.room = ''; // else signal.js joins it again
  }
  if (active || demo.room) render();
  else setState('offline');
  if (unloading) return;
  if (code === 4002) {
    showError(`signaling closed (${why}): this session continues on another connection`);
    return;
  }
  if (!reconnecting) return;
  const again = sig.name ? ` and logging in again as ${sig.name}` : '';
  if (code === 1001) notice(`the edge is going away (${why}): reconnecting${again}…`, 'warn');
  else if (resuming) notice(`signaling connection lost (${why}): reconnecting to resume the session; calls go on…`, 'warn');
  else if (was || demo.closes.length === 1) notice(`signaling connection closed (${why}): reconnecting${again}…`, 'warn');
});

sig.on('login', (d) => {
  if (d.success !== true) {
    if (d.reconnected) {
      showError(`login as "${d.name || demo.name}" refused: ${d.message}`);
      render();
    }
    return;
  }
  demo.loggedIn = true;
  demo.name = d.name;
  demo.logins++;
  if (d.resumed) demo.resumes++;
  if (d.reconnected && !d.resumed) {
    // A new session: the old one was released and our peers told.
    if (active) endCall('the call was lost while reconnecting', false);
    endMesh('the session was lost while reconnecting'); // signal.js joins the room again
  }
  if (!d.reconnected) notice(`logged in as ${d.name}`);
  else if (d.resumed) notice(`reconnected: session resumed as ${d.name}${active ? `; the call with ${active.peer} goes on` : ''}`);
  else notice(`reconnected and logged in again as ${d.name}`);
  if (active || demo.room) render();
  else setState('idle');
  startMedia();
});

sig.on('frame', (m) => {
  if (m.type !== 'candidate') log(`← ${m.type}${typeof m.name === 'string' ? ` ${m.name}` : ''}${typeof m.room === 'string' ? ` (room ${m.room})` : ''}`);
});
sig.on('offer', inOrder((d) => (demo.room ? meshOffer(d) : onOffer(d))));
sig.on('answer', inOrder((d) => (demo.room ? meshAnswer(d) : onAnswer(d))));
sig.on('candidate', inOrder((d) => (demo.room ? meshCandidate(d) : onCandidate(d))));
sig.on('leave', inOrder((d) => (demo.room ? meshLeave(d) : onLeave(d))));
sig.on('join', inOrder(onJoin));
sig.on('joined', inOrder(onJoined));
sig.on('parted', inOrder(onParted));
sig.on('presence', ({ name, online }) => {
  log(`presence: ${name} is ${online ? 'online' : 'offline'}`);
  renderPresence();
});
sig.on('error', inOrder(onError));

function login(name) {
  if (loginPending) return;
  name = String(name ?? '').trim();
  if (!name) return showError('enter a name to log in');
  if (demo.loggedIn) return showError(`already logged in as ${demo.name}`);
  loginPending = true;
  if (sig.socket !== 'open') notice(`will log in as ${name} once connected…`);
  log(`logging in as ${name}`);
  // Resumable: a dropped connection's session (calls, rooms, watches) is
  // held for the edge's grace period, frames for it kept, and signal.js
  // takes it back when it reconnects.
  sig.login(name, { resumable: true })
    .then(() => {
      const room = params.get('room');
      if (room && demo.logins === 1) joinRoom(room);
    })
    .catch((err) => showError(`login as "${name}" refused: ${err.message}`))
    .finally(() => {
      loginPending = false;
      render();
    });
}

function onError(d) {
  showError(d.message || 'unknown error');
  const c = active;
  // A call to someone who is not online ends right here. (Once media
  // flows, the call no longer needs signaling: the peer may just be
  // reconnecting.)
  if (c && demo.state !== 'in-call' && d.user === c.peer) endCall(`${c.peer} is not online`, false);
  const p = d.user !== undefined && mesh.get(d.user);
  if (p && p.pc.connectionState !== 'connected') closePeer(p.name, `${p.name} is not online`, false);
}

// ---- media ------------------------------------------------------------------

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

// play starts a remote video; autoplay with sound may need a user gesture:
// then it plays muted and onMuted is called.
function play(video, onMuted) {
  const p = video.play();
  if (!p) return;
  p.catch(() => {
    video.muted = true;
    onMuted();
    video.play().catch(() => {});
  });
}

// A connection to one other user, in a one-to-one call or a room:
// candidates wait until our offer or answer is out (outCands), and theirs
// until their description is set (inCands).
function newConnection(name, onChange) {
  const pc = new RTCPeerConnection({ iceServers: [...sig.iceServers, ...urlIceServers] });
  const c = { name, pc, descSent: false, outCands: [], inCands: [], stream: new MediaStream() };
  pc.onicecandidate = (ev) => {
    // A null candidate (end of candidates) is not sent: the tutorial
    // clients never did, and ICE completes without it.
    if (!ev.candidate || c.closed) return;
    if (c.descSent) sig.candidate(name, ev.candidate);
    else c.outCands.push(ev.candidate);
  };
  pc.oniceconnectionstatechange = () => log(`ICE ${name}: ${pc.iceConnectionState}`);
  pc.onconnectionstatechange = () => {
    log(`connection ${name}: ${pc.connectionState}`);
    if (!c.closed) onChange(pc.connectionState);
  };
  return c;
}

function descSent(c) {
  c.descSent = true;
  for (const cand of c.outCands) sig.candidate(c.name, cand);
  c.outCands = [];
}

async function remoteDescription(c, desc) {
  await c.pc.setRemoteDescription(desc);
  const list = c.inCands;
  c.inCands = [];
  for (const cand of list) await addCandidate(c, cand);
}

async function addCandidate(c, cand) {
  if (!cand) return; // end of candidates
  if (!c.pc.remoteDescription) {
    c.inCands.push(cand);
    return;
  }
  try {
    await c.pc.addIceCandidate(cand);
  } catch (err) {
    log(`candidate not usable: ${err.message || err}`);
  }
}

// ---- one-to-one calls ---------------------------------------------------------

// active is the current call: a connection plus {peer, role}.
let active = null;

function newCall(peer, role) {
  const c = newConnection(peer, (st) => {
    if (active !== c) return;
    if (st === 'connected') {
      if (demo.callToConnectedMs === null && demo.callStartedAt) {
        demo.callToConnectedMs = Math.round(performance.now() - demo.callStartedAt);
        log(`connected ${demo.callToConnectedMs} ms after the offer`);
      }
      notice(demo.callToConnectedMs === null ? `in call with ${peer}` : `in call with ${peer}: connected ${demo.callToConnectedMs} ms after the offer`);
      setState('in-call');
    } else if (st === 'failed') {
      endCall('the connection failed (no route between the peers?)', true);
    } else if (st === 'disconnected') {
      notice(`connection to ${peer} interrupted…`, 'warn');
    }
  });
  c.peer = peer;
  c.role = role;
  active = c;
  ui.error.hidden = true; // errors of an earlier call are old news
  demo.pc = c.pc;
  demo.peer = peer;
  demo.role = role;
  demo.reason = '';
  demo.callToConnectedMs = null;
  demo.remoteStream = c.stream;
  ui.remoteVideo.srcObject = c.stream;
  ui.unmute.hidden = true;
  setCallInfo(role === 'caller' ? `→ You called ${peer}` : `☎ Incoming call from ${peer}: accepted automatically`, role);
  c.pc.ontrack = (ev) => {
    if (active !== c) return;
    c.stream.addTrack(ev.track);
    log(`remote ${ev.track.kind} track`);
    play(ui.remoteVideo, () => { ui.unmute.hidden = false; });
    ev.track.onunmute = () => render();
    render();
  };
  return c;
}

async function startCall(peer) {
  peer = String(peer ?? '').trim();
  if (!demo.loggedIn) return showError('log in first');
  if (!peer) return showError('enter the name of the user to call');
  if (peer === demo.name) return showError('you cannot call yourself');
  if (demo.room) return showError(`you are in room ${demo.room}: leave it first`);
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
    if (!sig.offer(peer, c.pc.localDescription)) {
      showError('not connected: offer not sent');
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
  if (active) endCall('you hung up', true);
}

function endCall(reason, sendLeave) {
  const c = active;
  if (!c) return;
  active = null;
  c.closed = true;
  if (sendLeave && demo.socket === 'open') sig.leave(c.peer);
  c.pc.close();
  ui.remoteVideo.srcObject = null;
  ui.unmute.hidden = true;
  demo.reason = reason;
  setCallInfo(`${c.role === 'caller' ? '→ You called' : '☎ Call from'} ${c.peer} · ended: ${reason}`, 'ended');
  notice(`call with ${c.peer} ended: ${reason}`, 'warn');
  setState(demo.loggedIn ? 'ended' : 'offline');
}

ui.unmute.addEventListener('click', () => {
  ui.remoteVideo.muted = false;
  ui.unmute.hidden = true;
  ui.remoteVideo.play().catch(() => {});
});

async function onOffer(m) {
  const from = m.name;
  if (!demo.loggedIn || !from || !m.offer) {
    log('ignored an offer (not logged in, or no sender or offer)');
    return;
  }
  let c = active;
  if (c && c.peer !== from) {
    notice(`${from} called, but you are in a call with ${c.peer}: declined`, 'warn');
    sig.leave(from);
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
    c.closed = true;
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
    await remoteDescription(c, m.offer);
    if (active !== c) return;
    if (!c.mediaAdded) {
      c.mediaAdded = true;
      const stream = await startMedia();
      if (active !== c) return;
      addMedia(c.pc, stream);
    }
    await c.pc.setLocalDescription(await c.pc.createAnswer());
    if (active !== c) return;
    if (!sig.answer(from, c.pc.localDescription)) return;
    descSent(c);
    if (demo.state === 'answering') setState('connecting');
  } catch (err) {
    showError(`answering ${from} failed: ${err.message || err}`);
    if (active === c) endCall(`answering failed: ${err.message || err}`, true);
  }
}

async function onAnswer(m) {
  const c = active;
  if (!c || c.pc.signalingState !== 'have-local-offer' || !m.answer || (m.name && m.name !== c.peer)) {
    log('ignored an answer (no call waiting for one)');
    return;
  }
  try {
    await remoteDescription(c, m.answer);
    if (active !== c) return;
    if (demo.state === 'calling') setState('connecting');
  } catch (err) {
    showError(`bad answer from ${c.peer}: ${err.message || err}`);
    if (active === c) endCall('bad answer', true);
  }
}

async function onCandidate(m) {
  const c = active;
  if (!c || (m.name && m.name !== c.peer)) {
    log('ignored a candidate (no call with its sender)');
    return;
  }
  await addCandidate(c, m.candidate);
}

function onLeave(m) {
  if (!active || (m.name && m.name !== active.peer)) {
    log('leave received (no call with its sender)');
    return;
  }
  endCall(`${active.peer} left`, false);
}

// ---- rooms: a mesh call ----------------------------------------------------------

const mesh = new Map(); // name → connection with {role, tile}
const heldOffers = new Map(); // name → {offer, cands, timer}: sender not yet seen joining

async function joinRoom(room) {
  room = String(room ?? '').trim();
  if (!demo.loggedIn) return showError('log in first');
  if (!room) return showError('enter the name of a room');
  if (active) return showError(`in a call with ${active.peer}: hang up first`);
  if (demo.room) return showError(`already in room ${demo.room}`);
  ui.room.value = room;
  log(`joining room ${room}`);
  try {
    await sig.join(room);
  } catch (err) {
    showError(`joining room "${room}" failed: ${err.message}`);
  }
}

// onJoin handles the join reply, also of the join signal.js sends itself
// after a login that did not resume: offer to every member already there.
async function onJoin(d) {
  if (d.success !== true) {
    if (d.rejoin && d.room === demo.room) {
      endMesh(`joining room ${d.room} again failed`);
      demo.room = '';
      showError(`joining room "${d.room}" again failed: ${d.message}`);
      setState(demo.loggedIn ? 'idle' : 'offline');
    }
    return;
  }
  if (demo.room && demo.room !== d.room) return;
  demo.room = d.room;
  demo.meshStartedAt = performance.now();
  demo.meshConnectedMs = null;
  demo.meshTimes = {};
  notice(`joined room ${d.room}${d.users.length ? `: calling ${d.users.join(', ')}` : ': waiting for others'}`);
  setState('room');
  const stream = await startMedia();
  for (const name of d.users) {
    if (mesh.size >= MAX_PEERS) {
      log(`not calling ${name}: ${MAX_PEERS} peers already`);
      continue;
    }
    await meshCall(name, stream);
  }
}

function onJoined(d) {
  if (d.room !== demo.room) return;
  demo.roomLog.push({ type: 'joined', name: d.name });
  notice(`${d.name} joined room ${d.room}`);
  render();
  const h = heldOffers.get(d.name);
  if (!h) return undefined;
  clearTimeout(h.timer);
  heldOffers.delete(d.name);
  return meshOffer({ name: d.name, offer: h.offer }).then(() => {
    const p = mesh.get(d.name);
    if (p) return Promise.all(h.cands.map((cand) => addCandidate(p, cand)));
    return undefined;
  });
}

function onParted(d) {
  if (d.room !== demo.room) return;
  demo.roomLog.push({ type: 'parted', name: d.name });
  const h = heldOffers.get(d.name);
  if (h) clearTimeout(h.timer);
  heldOffers.delete(d.name);
  if (mesh.has(d.name)) closePeer(d.name, `${d.name} left the room`, false);
  else notice(`${d.name} left room ${d.room}`);
  render();
}

function meshLeave(d) {
  demo.roomLog.push({ type: 'leave', name: d.name ?? null });
  if (d.name && mesh.has(d.name)) closePeer(d.name, `${d.name} left`, false);
  else log(`leave${d.name ? ` from ${d.name}` : ''}: no connection of ours to end (the room's "parted" tells who left)`);
}

function newPeer(name, role) {
  const p = newConnection(name, (st) => {
    if (mesh.get(name) !== p) return;
    if (st === 'connected') {
      mark(name, 'connected');
      const all = [...mesh.values()].every((q) => q.pc.connectionState === 'connected');
      if (all && demo.meshConnectedMs === null && demo.meshStartedAt) {
        demo.meshConnectedMs = Math.round(performance.now() - demo.meshStartedAt);
        notice(`connected to every member of room ${demo.room} ${demo.meshConnectedMs} ms after joining`);
      }
    } else if (st === 'failed') {
      closePeer(name, `the connection to ${name} failed`, true);
    }
    render();
  });
  p.role = role;
  const fig = document.createElement('figure');
  fig.className = 'video remote';
  fig.dataset.testid = 'tile';
  fig.dataset.name = name;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.srcObject = p.stream;
  const cap = document.createElement('figcaption');
  cap.textContent = name;
  fig.append(video, cap);
  fig.addEventListener('click', () => { video.muted = false; });
  ui.videos.append(fig);
  p.tile = fig;
  p.pc.ontrack = (ev) => {
    p.stream.addTrack(ev.track);
    play(video, () => { cap.textContent = `${name} (muted: click to unmute)`; });
  };
  mesh.set(name, p);
  render();
  return p;
}

// mark notes when a step of the connection to name happened.
function mark(name, what) {
  const t = (demo.meshTimes[name] ||= {});
  t[what] = Math.round(performance.now() - demo.meshStartedAt);
}

function closePeer(name, reason, sendLeave) {
  const p = mesh.get(name);
  if (!p) return;
  mesh.delete(name);
  p.closed = true;
  if (sendLeave) sig.leave(name);
  p.pc.close();
  p.tile.remove();
  notice(`${reason}`, 'warn');
  render();
}

function endMesh(reason) {
  for (const name of [...mesh.keys()]) closePeer(name, reason, false);
  for (const h of heldOffers.values()) clearTimeout(h.timer);
  heldOffers.clear();
}

async function meshCall(name, stream) {
  if (mesh.has(name) || name === demo.name) return;
  const p = newPeer(name, 'offerer');
  try {
    addMedia(p.pc, stream);
    await p.pc.setLocalDescription(await p.pc.createOffer());
    if (mesh.get(name) !== p) return;
    // Offers to several members go out one at a time (signal.js), since
    // an answer does not say who sent it.
    if (!sig.offer(name, p.pc.localDescription)) return closePeer(name, 'not connected: offer not sent', false);
    mark(name, 'offered');
    descSent(p);
  } catch (err) {
    closePeer(name, `calling ${name} failed: ${err.message || err}`, true);
  }
}

async function meshOffer(d) {
  const from = d.name;
  if (!from || !d.offer) return;
  const members = sig.rooms.get(demo.room);
  if (!members || !members.has(from)) {
    // The offer travels to us, its "joined" through the room: it may come
    // first. Hold it a moment.
    const cands = heldOffers.get(from)?.cands || [];
    clearTimeout(heldOffers.get(from)?.timer);
    const timer = setTimeout(() => {
      heldOffers.delete(from);
      log(`declined an offer from ${from}, who is not in room ${demo.room}`);
      sig.leave(from);
    }, HOLD_OFFER);
    heldOffers.set(from, { offer: d.offer, cands, timer });
    return;
  }
  if (mesh.has(from)) closePeer(from, `${from} called again`, false);
  if (mesh.size >= MAX_PEERS) {
    log(`declined ${from}: ${MAX_PEERS} peers already`);
    sig.leave(from);
    return;
  }
  const p = newPeer(from, 'answerer');
  mark(from, 'offer');
  try {
    await remoteDescription(p, d.offer);
    const stream = await startMedia();
    if (mesh.get(from) !== p) return;
    addMedia(p.pc, stream);
    await p.pc.setLocalDescription(await p.pc.createAnswer());
    if (mesh.get(from) !== p) return;
    if (sig.answer(from, p.pc.localDescription)) {
      mark(from, 'answered');
      descSent(p);
    }
  } catch (err) {
    closePeer(from, `answering ${from} failed: ${err.message || err}`, true);
  }
}

async function meshAnswer(d) {
  const p = d.name && mesh.get(d.name);
  if (!p || p.pc.signalingState !== 'have-local-offer' || !d.answer) {
    log(`ignored an answer${d.name ? ` from ${d.name}` : ''} (no offer waiting for it)`);
    return;
  }
  mark(p.name, 'answer');
  try {
    await remoteDescription(p, d.answer);
  } catch (err) {
    closePeer(p.name, `bad answer from ${p.name}: ${err.message || err}`, true);
  }
}

async function meshCandidate(d) {
  const h = d.name && heldOffers.get(d.name);
  if (h) {
    h.cands.push(d.candidate);
    return;
  }
  const p = d.name && mesh.get(d.name);
  if (!p) {
    log('ignored a candidate (no connection with its sender)');
    return;
  }
  await addCandidate(p, d.candidate);
}

async function partRoom() {
  const room = demo.room;
  if (!room) return;
  for (const name of [...mesh.keys()]) closePeer(name, 'you left the room', true);
  endMesh('you left the room');
  demo.room = '';
  setState(demo.loggedIn ? 'idle' : 'offline');
  try {
    await sig.part(room);
    notice(`left room ${room}`);
  } catch (err) {
    showError(`leaving room "${room}": ${err.message}`);
  }
}

// meshBytes sums the inbound RTP bytes of each room connection.
async function meshBytes() {
  const out = {};
  for (const p of mesh.values()) {
    let n = 0;
    (await p.pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp') n += r.bytesReceived || 0; });
    out[p.name] = n;
  }
  return out;
}

// ---- presence -----------------------------------------------------------------

function watchNames(list) {
  const names = (Array.isArray(list) ? list : String(list ?? '').split(',')).map((n) => String(n).trim()).filter(Boolean);
  if (!names.length) return showError('enter names to watch, separated by commas');
  if (!sig.watch(names)) return showError('not connected: watch not sent');
  log(`watching ${names.join(', ')}`);
  return undefined;
}

// ---- controls -----------------------------------------------------------------

ui.loginForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  login(ui.name.value);
});
ui.callForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  startCall(ui.peer.value);
});
ui.hangupBtn.addEventListener('click', hangup);
ui.roomForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  joinRoom(ui.room.value);
});
ui.partBtn.addEventListener('click', partRoom);
ui.watchForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  watchNames(ui.watchNames.value);
  ui.watchNames.value = '';
});
window.addEventListener('pagehide', () => {
  unloading = true;
  if (active && demo.socket === 'open') sig.leave(active.peer);
  sig.close(); // the edge parts our rooms and tells our peers
});
window.addEventListener('pageshow', (ev) => {
  // Back from the back/forward cache: the socket was closed on the way out.
  if (!ev.persisted) return;
  unloading = false;
  demo.loggedIn = false;
  if (demo.name) login(demo.name);
  else sig.connect();
});

const preset = params.get('name');
render();
if (preset) {
  ui.name.value = preset;
  login(preset);
} else {
  sig.connect();
}
