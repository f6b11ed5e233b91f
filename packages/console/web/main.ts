// The console's entry point: sign-in with a token, navigation, the shed indicator, and the
// hash router (#/graph, #/policies, #/editor, #/flows, #/audit, #/endpoint/NS/NAME).

import { api, ApiFailure, signIn, signOut, token } from './api.js';
import { boardView } from './board.js';
import { h } from './dom.js';
import { editorView } from './editor.js';
import { endpointView } from './endpoint.js';
import { graphView } from './graph.js';
import { auditView, flowLogView } from './logs.js';

const app = document.getElementById('app') as HTMLElement;
const live: { stop?: () => void } = {};

function signInView(message?: string): void {
  const input = h('input', {
    id: 'token',
    type: 'password',
    autocomplete: 'off',
    required: true,
    size: '50',
  });
  const form = h(
    'form',
    { class: 'signin', 'aria-label': 'sign in' },
    h('h1', {}, 'Palisade console'),
    h(
      'p',
      {},
      'Sign in with an API token (palisade token create --user NAME, or the admin token of the data dir).',
    ),
    message ? h('p', { class: 'error', role: 'alert' }, message) : null,
    h('label', { for: 'token' }, 'Token '),
    input,
    ' ',
    h('button', { type: 'submit' }, 'Sign in'),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    signIn(input.value);
    void api<{ kind: string; name: string }>('/api/v1/whoami')
      .then(() => {
        if (!location.hash || location.hash === '#/') location.hash = '#/graph';
        else void route();
      })
      .catch((err: unknown) =>
        signInView(err instanceof ApiFailure ? `${err.code}: ${err.message}` : String(err)),
      );
  });
  document.getElementById('nav')?.replaceChildren();
  app.replaceChildren(form);
  input.focus();
}

async function nav(): Promise<void> {
  const who = await api<{ kind: string; name: string }>('/api/v1/whoami');
  const stats = await api<{ shedTotal: number; records: number }>('/api/v1/flows/stats').catch(
    () => undefined,
  );
  const link = (href: string, text: string) =>
    h('a', { href, ...(location.hash.startsWith(href) ? { 'aria-current': 'page' } : {}) }, text);
  const out = h('button', { type: 'button', id: 'signout' }, 'Sign out');
  out.addEventListener('click', () => {
    signOut();
    signInView();
  });
  document.getElementById('nav')?.replaceChildren(
    h(
      'nav',
      { 'aria-label': 'main' },
      link('#/graph', 'Graph'),
      link('#/policies', 'Policies'),
      link('#/editor', 'Editor'),
      link('#/flows', 'Flows'),
      link('#/audit', 'Audit'),
    ),
    h(
      'span',
      { class: 'who' },
      stats
        ? h(
            'span',
            {
              id: 'shed',
              class: stats.shedTotal > 0 ? 'warn' : '',
              title: 'flow records the nodes could not keep or send, counted',
            },
            `${stats.records} records · shed ${stats.shedTotal}`,
          )
        : null,
      ` ${who.kind} ${who.name} `,
      out,
    ),
  );
}

async function route(): Promise<void> {
  live.stop?.();
  delete live.stop;
  if (!token()) return signInView();
  const hash = location.hash.replace(/^#/, '') || '/graph';
  const [path = '/graph', query = ''] = hash.split('?');
  const params = new URLSearchParams(query);
  delete app.dataset['ready'];
  app.replaceChildren(h('p', {}, 'Loading…'));
  try {
    await nav();
    if (path === '/graph') await graphView(app, params.get('since') ?? '1h');
    else if (path === '/policies') await boardView(app, params.get('focus') ?? undefined);
    else if (path === '/editor') editorView(app);
    else if (path === '/flows') await flowLogView(app, params, live);
    else if (path === '/audit') await auditView(app, params);
    else if (path.startsWith('/endpoint/'))
      await endpointView(app, decodeURIComponent(path.slice('/endpoint/'.length)));
    else
      app.replaceChildren(
        h('h1', {}, 'Not found'),
        h('p', {}, h('a', { href: '#/graph' }, 'Back to the graph')),
      );
  } catch (e) {
    if (e instanceof ApiFailure && e.status === 401)
      return signInView('The token is not valid (or expired).');
    app.dataset['ready'] = 'error';
    app.replaceChildren(
      h('h1', {}, 'Error'),
      h(
        'p',
        { class: 'error', role: 'alert' },
        e instanceof ApiFailure ? `${e.code}: ${e.message}` : String(e),
      ),
    );
  }
  document.querySelector('h1')?.setAttribute('tabindex', '-1');
}

window.addEventListener('hashchange', () => void route());
window.addEventListener('palisade-signed-out', () =>
  signInView('Signed out: the token was refused.'),
);
void route();
