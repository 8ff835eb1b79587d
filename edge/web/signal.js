// signal.js: a small browser client of the signaling edge. An ES module
// with no dependencies and no build step; every edge serves it at /signal.js.
//
//   import { Signal } from '/signal.js';
//   const sig = new Signal();                  // the edge this file came from
//   sig.on('offer', ({ name, offer }) => ...); // handlers get the frame
//   await sig.login('alice', { resumable: true });
//
// new Signal(url?, options?)
//   url: ws:// or wss:// URL; default: the edge that served this file.
//   options (defaults): reconnect (true): after a close that was not ours,
//   reconnect with exponential backoff from minDelay (200 ms) doubling to
//   maxDelay (5000 ms), with jitter, at most maxRetries times (Infinity); a
//   1001 (edge going away) retries at once. Then it logs in again: with the
//   resume token when the session was resumable and dropped (the call, the
//   rooms and the watches go on), else afresh, re-joining the rooms and
//   watching again; a refused re-login is retried loginRetries (8) times.
//   No reconnect after close(), 4002 (resumed elsewhere) or 4003 (kicked).
//
// Methods (sends return false when the frame could not be sent):
//   connect()                      open the socket (login does it too)
//   login(name, {resumable})       → Promise of the reply; rejects with an Error
//   close()                        close cleanly: the name is released
//   offer(name, sdp) answer(name, sdp) candidate(name, c) leave(name)
//   message(name, data)            app data to one user
//   join(room) → Promise of the other members; part(room) → Promise
//   roomMessage(room, data)        app data to every other member
//   watch(...names) unwatch(...names)
//   send(frame)                    any frame, as is
//   on(type, fn) → off()           fn(detail, event); or addEventListener
// State: socket ('closed' | 'connecting' | 'open'), name, loggedIn,
//   resumable, iceServers (from the login reply), rooms (Map room → Set of
//   members), presence (Map name → online), peers (Set: who the edge will
//   send our leave to, and we expect a leave from).
// Events (detail: the frame as received, plus what is noted):
//   open; close {code, reason, resuming, reconnecting}; reconnecting
//   {attempt, delay}; login (also a re-login: {resumed, reconnected});
//   offer, answer, candidate, leave {name}; message {name, room?, data};
//   join (also a re-join: {rejoin}), part, joined, parted {room, name};
//   presence {name, online}; error {message, user?}; frame (every frame).
//
// Answers, candidates and leave carry no sender in the tutorial protocol
// (offers do), so signal.js names it where it can tell: an answer comes from
// the one user with an offer waiting for an answer (offers to several users
// go out one at a time: the next when the answer is in, a leave, or after
// answerTimeout, 10 s; candidates to a user wait behind its offer); a
// candidate from the user whose ICE ufrag it carries (learnt from their offer
// or answer); a leave from the one peer, or from a peer that just parted a
// shared room or went offline. Otherwise detail.name is undefined. In a room,
// parted always names who left. A "name" the server puts in these frames
// wins (and once answers carry one, offers go out at once). The names are as trustworthy as the protocol:
// anyone can send you an answer.
//
// Nothing a tutorial server would not understand is sent unless the app uses
// the feature: "resumable" only when asked for, "resume" only with a token
// the server gave, joins and watches only when the app made them.

const DEFAULTS = {
  reconnect: true,
  minDelay: 200,
  maxDelay: 5000,
  maxRetries: Infinity,
  loginRetries: 8,
  answerTimeout: 10000,
  replyTimeout: 15000,
  outbox: 256, // frames kept while a resumable session reconnects
  WebSocket: globalThis.WebSocket,
};

function defaultURL() {
  const u = new URL('.', import.meta.url);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.href;
}

const sdpUfrag = (d) => (d && typeof d.sdp === 'string' && /^a=ice-ufrag:(\S+)/m.exec(d.sdp)?.[1]) || '';
const candUfrag = (c) => (c && (c.usernameFragment || /\sufrag (\S+)/.exec(c.candidate || '')?.[1])) || '';

export class Signal extends EventTarget {
  constructor(url, options = {}) {
    super();
    this.url = url || defaultURL();
    this.opts = { ...DEFAULTS, ...options };
    this.socket = 'closed';
    this.name = ''; // of the session: wanted, or logged in
    this.loggedIn = false;
    this.resumable = false;
    this.resumeToken = '';
    this._received = 0; // text frames since the last successful login reply
    this.iceServers = [];
    this.rooms = new Map();
    this.presence = new Map();
    this.peers = new Set();
    this._ws = null;
    this._stopped = false;
    this._retry = 0;
    this._timer = 0;
    this._pending = null; // the login in flight: {auto, tries}
    this._loginWait = null; // {resolve, reject} of login()
    this._replies = []; // {type, room, resolve, reject, timer}
    this._resuming = false; // a dropped resumable session is reconnecting
    this._outbox = [];
    this._watching = new Set();
    this._queue = []; // offers waiting for their turn: {name, frames}
    this._waitingAnswer = null; // {name, timer}
    this._ufrags = new Map(); // remote ICE ufrag → name
    this._departing = new Set(); // peers that parted or went offline
    this._unnamedLeaves = 0;
    this._namedAnswers = false; // the server names the sender of answers
  }

  on(type, fn) {
    const h = (ev) => fn(ev.detail, ev);
    this.addEventListener(type, h);
    return () => this.removeEventListener(type, h);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // ---- socket -------------------------------------------------------------

  connect() {
    if (this._ws) return;
    clearTimeout(this._timer);
    this._stopped = false;
    this.socket = 'connecting';
    const ws = new this.opts.WebSocket(this.url);
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this.socket = 'open';
      this._emit('open', {});
      if (this.name) this._sendLogin();
    };
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      // Every text frame after a successful login reply counts: a resume
      // says how many arrived, so that the edge re-sends exactly the rest.
      this._received++;
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (m && typeof m === 'object' && !Array.isArray(m)) this._handle(m);
    };
    ws.onclose = (ev) => {
      if (this._ws === ws) this._closed(ev.code, ev.reason);
    };
  }

  close() {
    this._stopped = true;
    this.name = '';
    this.rooms.clear();
    this._watching.clear();
    clearTimeout(this._timer);
    const ws = this._ws;
    if (ws) ws.close(1000, 'bye');
    else this._closed(1000, 'bye');
  }

  _closed(code, reason) {
    this._ws = null;
    this.socket = 'closed';
    const was = this.loggedIn;
    this.loggedIn = false;
    this._pending = null;
    // Only a drop (1006: no close frame either way) leaves the session
    // held by the edge, for its grace period.
    const resuming = !this._stopped && code === 1006 && (was || this._resuming) && !!this.resumeToken;
    this._resuming = resuming;
    if (!resuming) this._lost('connection closed');
    if (code === 4002 || code === 4003) {
      this._stopped = true;
      this.name = '';
    }
    const again = !this._stopped && this.opts.reconnect && this._retry < this.opts.maxRetries;
    this._emit('close', { code, reason, resuming, reconnecting: again });
    if (!again) {
      if (this._loginWait) this._loginWait.reject(new Error(`connection closed (${code})`));
      this._loginWait = null;
      return;
    }
    let delay = Math.min(this.opts.maxDelay, this.opts.minDelay * 2 ** this._retry);
    if (code === 1001 && this._retry === 0) delay = 0;
    delay += Math.random() * Math.min(delay, 500) * 0.5;
    this._retry++;
    this.socket = 'connecting';
    this._emit('reconnecting', { attempt: this._retry, delay });
    this._timer = setTimeout(() => this.connect(), delay);
  }

  // _lost forgets what a session that ended (or will not be resumed) had
  // with the edge: peers, waiting offers, replies awaited.
  _lost(why) {
    this.resumeToken = '';
    this._outbox = [];
    this.peers.clear();
    this._departing.clear();
    this._unnamedLeaves = 0;
    this._ufrags.clear();
    this._queue = [];
    if (this._waitingAnswer) clearTimeout(this._waitingAnswer.timer);
    this._waitingAnswer = null;
    for (const r of this._replies.splice(0)) {
      clearTimeout(r.timer);
      r.reject(new Error(why));
    }
  }

  send(frame) {
    const ws = this._ws;
    if (this._resuming) {
      if (frame.type === 'login' && ws && ws.readyState === 1) {
        ws.send(JSON.stringify(frame));
        return true;
      }
      if (this._outbox.length >= this.opts.outbox) return false;
      this._outbox.push(frame);
      return true;
    }
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  // ---- login --------------------------------------------------------------

  login(name, { resumable = false } = {}) {
    if (this.loggedIn) return Promise.reject(new Error(`already logged in as "${this.name}"`));
    if (this._loginWait) return Promise.reject(new Error('a login is already waiting for its reply'));
    return new Promise((resolve, reject) => {
      this._loginWait = { resolve, reject };
      this.name = String(name);
      this.resumable = !!resumable;
      if (this.socket === 'open') this._sendLogin();
      else this.connect();
    });
  }

  _sendLogin(tries = 0) {
    const frame = { type: 'login', name: this.name };
    if (this.resumable) frame.resumable = true;
    if (this._resuming && this.resumeToken) {
      frame.resume = this.resumeToken;
      frame.received = this._received;
    }
    this._pending = { auto: !this._loginWait, tries };
    this.send(frame);
  }

  _onLogin(m) {
    const p = this._pending;
    this._pending = null;
    if (!p) return;
    const wait = this._loginWait;
    if (m.success === true) {
      this._received = 0;
      this._loginWait = null;
      this.loggedIn = true;
      this._retry = 0;
      this.resumeToken = typeof m.resume === 'string' ? m.resume : '';
      this.iceServers = Array.isArray(m.iceServers) ? m.iceServers : [];
      const resumed = m.resumed === true;
      const outbox = this._outbox;
      this._outbox = [];
      this._resuming = false;
      if (resumed) {
        for (const f of outbox) this.send(f);
      } else {
        const token = this.resumeToken;
        this._lost('the session was not resumed');
        this.resumeToken = token;
        // A new session: the edge knows nothing of our rooms and watches.
        for (const room of this.rooms.keys()) this.send({ type: 'join', room });
        if (this._watching.size) this.send({ type: 'watch', names: [...this._watching] });
      }
      this._emit('login', { ...m, name: this.name, resumed, reconnected: p.auto });
      if (wait) wait.resolve(m);
      return;
    }
    const message = typeof m.message === 'string' ? m.message : 'name is taken';
    if (p.auto && message === 'resume token does not match') {
      this._resuming = false; // the session is gone: log in afresh
      this._lost(message);
      this._sendLogin(p.tries + 1);
      return;
    }
    if (p.auto && p.tries < this.opts.loginRetries) {
      // The old connection may not have released the name yet.
      setTimeout(() => {
        if (this.socket === 'open' && !this.loggedIn && this.name && !this._pending) this._sendLogin(p.tries + 1);
      }, 250 * (p.tries + 1));
      return;
    }
    this.name = '';
    this._resuming = false;
    this._loginWait = null;
    this._emit('login', { ...m, message, reconnected: p.auto });
    if (wait) wait.reject(new Error(message));
  }

  // ---- calls ----------------------------------------------------------------

  offer(name, offer) {
    this.peers.add(name);
    this._departing.delete(name);
    const frame = { type: 'offer', name, offer };
    this._queue = this._queue.filter((q) => q.name !== name);
    const w = this._waitingAnswer;
    if (!this._namedAnswers && ((w && w.name !== name) || this._queue.length)) {
      this._queue.push({ name, frames: [frame] });
      return true;
    }
    if (!this.send(frame)) return false;
    this._awaitAnswer(name);
    return true;
  }

  _awaitAnswer(name) {
    if (this._waitingAnswer) clearTimeout(this._waitingAnswer.timer);
    const w = { name, timer: 0 };
    w.timer = setTimeout(() => this._answered(name), this.opts.answerTimeout);
    this._waitingAnswer = w;
  }

  // _answered ends the wait for name's answer, and sends the next offer.
  _answered(name) {
    const w = this._waitingAnswer;
    if (!w || w.name !== name) return;
    clearTimeout(w.timer);
    this._waitingAnswer = null;
    while (this._queue.length && !this._waitingAnswer) {
      const q = this._queue.shift();
      if (q.frames.every((f) => this.send(f))) this._awaitAnswer(q.name);
    }
  }

  answer(name, answer) {
    this.peers.add(name);
    this._departing.delete(name);
    this._answered(name); // our own offer to name, if any, lost the glare
    return this.send({ type: 'answer', name, answer });
  }

  candidate(name, candidate) {
    const q = this._queue.find((e) => e.name === name);
    if (q) {
      q.frames.push({ type: 'candidate', name, candidate });
      return true;
    }
    return this.send({ type: 'candidate', name, candidate });
  }

  leave(name) {
    const queued = this._queue.some((q) => q.name === name);
    this._queue = this._queue.filter((q) => q.name !== name);
    this._forget(name);
    if (queued) return true; // the offer never went out: nothing to end
    return this.send({ type: 'leave', name });
  }

  _forget(name) {
    this.peers.delete(name);
    this._departing.delete(name);
    for (const [u, n] of this._ufrags) if (n === name) this._ufrags.delete(u);
    this._answered(name);
  }

  _onlyPeer() {
    return this.peers.size === 1 ? this.peers.values().next().value : undefined;
  }

  // _gone notes that a peer parted a shared room or went offline: a leave
  // from it is on its way, or came already without a name.
  _gone(name) {
    if (!this.peers.has(name)) return;
    if (this._unnamedLeaves > 0) {
      this._unnamedLeaves--;
      this._forget(name);
    } else {
      this._departing.add(name);
    }
  }

  message(name, data) {
    return this.send({ type: 'message', name, data });
  }

  // ---- rooms and presence -------------------------------------------------------

  join(room) {
    return this._request({ type: 'join', room });
  }

  part(room) {
    return this._request({ type: 'part', room });
  }

  roomMessage(room, data) {
    return this.send({ type: 'message', room, data });
  }

  _request(frame) {
    return new Promise((resolve, reject) => {
      const r = { type: frame.type, room: frame.room, resolve, reject, timer: 0 };
      r.timer = setTimeout(() => {
        this._replies = this._replies.filter((x) => x !== r);
        reject(new Error(`no reply to ${frame.type} "${frame.room}"`));
      }, this.opts.replyTimeout);
      this._replies.push(r);
      if (!this.send(frame)) {
        clearTimeout(r.timer);
        this._replies = this._replies.filter((x) => x !== r);
        reject(new Error(`not connected: ${frame.type} not sent`));
      }
    });
  }

  _onRoomReply(m) {
    const i = this._replies.findIndex((r) => r.type === m.type && r.room === m.room);
    const r = i >= 0 ? this._replies.splice(i, 1)[0] : null;
    if (r) clearTimeout(r.timer);
    if (m.success === true && m.type === 'join') {
      const users = Array.isArray(m.users) ? m.users : [];
      this.rooms.set(m.room, new Set(users));
      this._emit('join', { ...m, users, rejoin: !r });
      if (r) r.resolve(users);
      return;
    }
    if (m.type === 'part' || !r) this.rooms.delete(m.room); // parted, or a re-join failed
    this._emit(m.type, m);
    if (!r) return;
    if (m.success === true) r.resolve();
    else r.reject(new Error(typeof m.message === 'string' ? m.message : `${m.type} refused`));
  }

  watch(...names) {
    const list = names.flat().map(String);
    for (const n of list) this._watching.add(n);
    return this.send({ type: 'watch', names: list });
  }

  unwatch(...names) {
    const list = names.flat().map(String);
    for (const n of list) {
      this._watching.delete(n);
      this.presence.delete(n);
    }
    return this.send({ type: 'unwatch', names: list });
  }

  // ---- incoming -------------------------------------------------------------

  _handle(m) {
    this._emit('frame', m);
    const name = typeof m.name === 'string' ? m.name : undefined;
    switch (m.type) {
      case 'login':
        return this._onLogin(m);
      case 'offer':
        if (name) {
          this.peers.add(name);
          this._departing.delete(name);
          const u = sdpUfrag(m.offer);
          if (u) this._ufrags.set(u, name);
        }
        return this._emit('offer', m);
      case 'answer': {
        if (name) this._namedAnswers = true; // no need to send offers one at a time
        const from = name ?? this._waitingAnswer?.name ?? this._onlyPeer();
        if (from) {
          this._answered(from);
          this.peers.add(from);
          const u = sdpUfrag(m.answer);
          if (u) this._ufrags.set(u, from);
        }
        return this._emit('answer', { ...m, name: from });
      }
      case 'candidate': {
        const u = candUfrag(m.candidate);
        const known = u ? this._ufrags.get(u) : undefined;
        const from = name ?? known ?? this._waitingAnswer?.name ?? this._onlyPeer();
        return this._emit('candidate', { ...m, name: from });
      }
      case 'leave': {
        const from = name ?? this._departing.values().next().value ?? this._onlyPeer();
        if (from) this._forget(from);
        else if (this.peers.size) this._unnamedLeaves++;
        return this._emit('leave', { ...m, name: from });
      }
      case 'join':
      case 'part':
        return this._onRoomReply(m);
      case 'joined':
        if (name) this.rooms.get(m.room)?.add(name);
        return this._emit('joined', m);
      case 'parted':
        this.rooms.get(m.room)?.delete(name);
        if (name) this._gone(name);
        return this._emit('parted', m);
      case 'presence':
        if (!name || !this._watching.has(name)) return;
        this.presence.set(name, m.online === true);
        if (m.online !== true) this._gone(name);
        return this._emit('presence', m);
      case 'message':
        return this._emit('message', m);
      case 'error': {
        const message = typeof m.message === 'string' ? m.message : '';
        const user = /^user "(.*)" is not online$/s.exec(message)?.[1];
        if (user !== undefined && this._waitingAnswer?.name === user) this._forget(user);
        return this._emit('error', { ...m, message, user });
      }
    }
  }
}
