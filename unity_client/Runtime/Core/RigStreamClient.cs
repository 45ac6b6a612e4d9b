// Subscribes to a session's rig stream and keeps it up: receives on a background task,
// reconnects with backoff and subscribes again, hands frames over through LatestFrames.
using System;
using System.Threading;
using System.Threading.Tasks;

namespace FreeAvatar
{
    public enum ConnectionState
    {
        Idle,        // not started
        Connecting,  // a call is being opened
        Streaming,   // the server accepted the call; frames flow whenever the session has any
        Waiting,     // the call ended or failed; reconnecting after a backoff delay
        Failed,      // the server refused the call for good (unknown session, wrong token)
        Stopped,
    }

    public sealed class RigStreamClient : IDisposable
    {
        readonly IRigTransport transport;
        readonly byte[] request;
        readonly ReconnectPolicy policy;
        readonly Func<double> clock;
        readonly object gate = new object();
        CancellationTokenSource cancel;
        Task loop;
        ConnectionState state = ConnectionState.Idle;
        string lastError = "";
        int accepted;
        long messages;

        /// <summary>Where received frames go; the main thread takes them from here.</summary>
        public readonly LatestFrames Frames;

        /// <summary>Raised on the receiving thread after every change of State: engine APIs
        /// are off limits there; poll State from the main thread instead.</summary>
        public event Action<ConnectionState, string> StateChanged;

        public RigStreamClient(
            IRigTransport transport, SubscribeRequest subscription,
            ReconnectPolicy policy = null, LatestFrames frames = null, Func<double> clock = null)
        {
            if (transport == null) throw new ArgumentNullException("transport");
            if (subscription == null || string.IsNullOrEmpty(subscription.SessionId))
                throw new ArgumentException("a subscription needs a session id", "subscription");
            this.transport = transport;
            request = RigWire.Encode(subscription);
            this.policy = policy ?? new ReconnectPolicy();
            Frames = frames ?? new LatestFrames();
            this.clock = clock ?? (() => MonotonicClock.Now);
        }

        public ConnectionState State { get { lock (gate) return state; } }

        /// <summary>Why the last call ended, or "".</summary>
        public string LastError { get { lock (gate) return lastError; } }

        /// <summary>Calls the server has accepted: 1 after the first connect, +1 per reconnect.</summary>
        public int AcceptedCalls { get { lock (gate) return accepted; } }

        public long MessagesReceived { get { return Interlocked.Read(ref messages); } }

        public void Start()
        {
            lock (gate)
            {
                if (loop != null) throw new InvalidOperationException("the client is already started");
                cancel = new CancellationTokenSource();
                var token = cancel.Token;
                loop = Task.Run(() => Run(token));
            }
        }

        /// <summary>Ends the stream: cancels the call, then waits (up to `timeout`) for the task.</summary>
        public void Stop(TimeSpan timeout)
        {
            Task running;
            lock (gate)
            {
                running = loop;
                if (running == null) return;
                cancel.Cancel();
            }
            try { running.Wait(timeout); }
            catch (AggregateException) { }  // Run handles its own failures; nothing left to report
            lock (gate)
            {
                cancel.Dispose();
                cancel = null;
                loop = null;
            }
        }

        public void Dispose()
        {
            Stop(TimeSpan.FromSeconds(2));
        }

        async Task Run(CancellationToken token)
        {
            while (!token.IsCancellationRequested)
            {
                SetState(ConnectionState.Connecting, null);
                string ended;
                try
                {
                    using (var call = transport.Subscribe(request, token))
                    {
                        await call.WaitAcceptedAsync(token).ConfigureAwait(false);
                        policy.Reset();
                        lock (gate) accepted++;
                        SetState(ConnectionState.Streaming, "");
                        while (true)
                        {
                            var bytes = await call.ReadAsync(token).ConfigureAwait(false);
                            if (bytes == null) break;
                            Frames.Offer(RigWire.ParseRigStreamMessage(bytes), clock());
                            Interlocked.Increment(ref messages);
                        }
                        ended = "the server ended the stream";
                    }
                }
                catch (OperationCanceledException) when (token.IsCancellationRequested)
                {
                    break;
                }
                catch (RigCallException error) when (error.Permanent)
                {
                    SetState(ConnectionState.Failed, error.Message);
                    return;
                }
                catch (Exception error)  // the network, the server going away, a corrupt message
                {
                    ended = error.Message;
                }
                SetState(ConnectionState.Waiting, ended);
                try
                {
                    await Task.Delay(policy.NextDelay(), token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
            SetState(ConnectionState.Stopped, null);
        }

        void SetState(ConnectionState next, string error)
        {
            Action<ConnectionState, string> changed;
            string why;
            lock (gate)
            {
                state = next;
                if (error != null) lastError = error;
                why = lastError;
                changed = StateChanged;
            }
            if (changed != null) changed(next, why);
        }
    }
}
