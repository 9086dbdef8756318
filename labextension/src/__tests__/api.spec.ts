import { ApiError, TrainingApi } from '../api';
import { fakeServer, job } from './fixtures';

const BASE = 'http://lab.test/user/me/';

describe('TrainingApi', () => {
  it('builds URLs under the base URL with the backend and the query', async () => {
    const { request, calls } = fakeServer(() => ({ body: { jobs: [job('a', 'RUNNING')] } }));
    const api = new TrainingApi(request, BASE);
    const jobs = await api.jobs('baseten', { project: 'my proj' });
    expect(jobs.map(j => j.id)).toEqual(['a']);
    expect(calls[0].url.pathname).toBe('/user/me/bt-jupyter/jobs');
    expect(calls[0].url.searchParams.get('backend')).toBe('baseten');
    expect(calls[0].url.searchParams.get('project')).toBe('my proj');
    expect(calls[0].url.searchParams.has('status')).toBe(false);
    expect(calls[0].init.method).toBe('GET');
  });

  it('sends log follow parameters as the server expects', async () => {
    const { request, calls } = fakeServer(() => ({ body: { logs: [], cursor: 'c2', done: false } }));
    const page = await new TrainingApi(request, BASE).logs('local', 'job/1', { cursor: 'c1', follow: true });
    expect(page.cursor).toBe('c2');
    const url = calls[0].url;
    expect(url.pathname).toBe('/user/me/bt-jupyter/jobs/job%2F1/logs');
    expect(Object.fromEntries(url.searchParams)).toEqual({
      backend: 'local',
      cursor: 'c1',
      tail: '500',
      follow: '1',
      timeout: '20'
    });
  });

  it('POSTs stop and deploy with a JSON body', async () => {
    const { request, calls } = fakeServer(url =>
      url.pathname.endsWith('/deploy')
        ? { status: 202, body: { deployment: { id: 'd', name: 'dep', status: 'DEPLOYING', url: null, checkpoint: 'ck' } } }
        : { body: { job: job('a', 'STOPPED') } }
    );
    const api = new TrainingApi(request, BASE);
    expect((await api.stop('local', 'a')).status_short).toBe('STOPPED');
    expect((await api.deploy('local', 'a', 'ck')).name).toBe('dep');
    expect(calls.map(c => c.init.method)).toEqual(['POST', 'POST']);
    expect(JSON.parse(String(calls[1].init.body))).toEqual({ checkpoint: 'ck' });
  });

  it('turns an error reply into an ApiError carrying the server message', async () => {
    const { request } = fakeServer(() => ({
      status: 409,
      body: { message: 'job a already ended (STOPPED)', reason: 'Conflict' }
    }));
    const error = await new TrainingApi(request, BASE).stop('local', 'a').catch(e => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.message).toBe('job a already ended (STOPPED)');
    expect(error.status).toBe(409);
    expect(error.reason).toBe('Conflict');
  });

  it('never reports an empty error: plain text, HTML 404 and empty bodies', async () => {
    const reply = (status: number, body: string) =>
      new TrainingApi(fakeServer(() => ({ status, body })).request, BASE).config().catch(e => e);
    expect((await reply(500, 'boom')).message).toBe('boom');
    expect((await reply(404, '<html>Not found</html>')).message).toMatch(/server extension is not answering/);
    expect((await reply(502, '')).message).toBe('HTTP 502 Error');
  });

  it('reports a body that is not JSON', async () => {
    const { request } = fakeServer(() => ({ body: 'not json' }));
    await expect(new TrainingApi(request, BASE).projects('local')).rejects.toThrow(/other than JSON/);
  });
});
