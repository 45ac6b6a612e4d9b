// The engine-independent core of unity_client, exercised under mono by tests/unity_client.
//
//   mono CoreTests.exe selftest                   the core's own tests; exit 1 on any failure
//   mono CoreTests.exe decode  < messages         each length-prefixed RigStreamMessage as JSON
//   mono CoreTests.exe names   < lines            ArkitNames.Canonical of each line, as JSON
//   mono CoreTests.exe client PORT SESSION TOKEN [AVATAR...]
//        the whole client (RigStreamClient, LatestFrames, JitterBuffer) over RelayTransport,
//        a main loop taking frames as Unity's would; JSON events out; "stop" on stdin ends it
//
// Floats go out as their IEEE bits (int32) so the Python side can compare them exactly.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using FreeAvatar;

static class CoreTests
{
    static readonly object Out = new object();

    static int Main(string[] args)
    {
        switch (args.Length > 0 ? args[0] : "")
        {
            case "selftest": return SelfTest.Run();
            case "decode": return Decode();
            case "names": return Names();
            case "client": return Client(int.Parse(args[1]), args[2], args[3], args.Skip(4).ToArray());
            default:
                Console.Error.WriteLine("usage: CoreTests.exe selftest | decode | names | client PORT SESSION TOKEN [AVATAR...]");
                return 2;
        }
    }

    static int Decode()
    {
        var input = Console.OpenStandardInput();
        byte[] header;
        while ((header = ReadExactly(input, 4)) != null)
        {
            int length = header[0] << 24 | header[1] << 16 | header[2] << 8 | header[3];
            var bytes = ReadExactly(input, length) ?? new byte[0];
            try
            {
                Emit(Json.Message(RigWire.ParseRigStreamMessage(bytes)));
            }
            catch (RigWireException error)
            {
                Emit("{\"error\":" + Json.Str(error.Message) + "}");
            }
        }
        return 0;
    }

    static int Names()
    {
        var input = new StreamReader(Console.OpenStandardInput(), new UTF8Encoding(false));
        string line;
        while ((line = input.ReadLine()) != null) Emit(Json.Str(ArkitNames.Canonical(line)));
        return 0;
    }

    /// <summary>What a Unity scene does, minus Unity: the connection's Update takes the newest
    /// frame per avatar; each avatar's buffer plays them out.</summary>
    static int Client(int port, string session, string token, string[] avatars)
    {
        var policy = new ReconnectPolicy { InitialDelaySeconds = 0.05, MaxDelaySeconds = 0.5 };
        var subscription = new SubscribeRequest { SessionId = session, SessionToken = token, AvatarIds = avatars };
        var client = new RigStreamClient(new RelayTransport(port), subscription, policy);
        client.StateChanged += (state, error) => Emit("{\"state\":" + Json.Str(state.ToString()) + ",\"error\":" + Json.Str(error) + "}");
        var stop = new ManualResetEventSlim();
        new Thread(() => { while (Console.ReadLine() is string line && line != "stop") { } stop.Set(); }) { IsBackground = true }.Start();
        var buffers = new Dictionary<string, JitterBuffer>();
        var taken = new List<ReceivedFrame>();
        var sample = new RigSample();
        int samples = 0;
        client.Start();
        while (!stop.Wait(5))  // a 200 Hz "engine"
        {
            taken.Clear();
            client.Frames.TakeAll(taken);
            foreach (var received in taken)
            {
                Emit("{\"taken\":" + Json.Frame(received.Frame) + ",\"avatar_name\":" + Json.Str(received.Controls != null ? received.Controls.AvatarName : null) + "}");
                JitterBuffer buffer;
                if (!buffers.TryGetValue(received.Frame.AvatarId, out buffer)) buffers[received.Frame.AvatarId] = buffer = new JitterBuffer(0.05);
                buffer.Add(received.Frame, received.ReceivedAt);
            }
            foreach (var buffer in buffers.Values)
            {
                if (buffer.Sample(MonotonicClock.Now, sample)) samples++;
            }
        }
        client.Stop(TimeSpan.FromSeconds(2));
        Emit("{\"summary\":{\"accepted\":" + client.AcceptedCalls + ",\"received\":" + client.Frames.Received
            + ",\"replaced\":" + client.Frames.Replaced + ",\"samples\":" + samples + ",\"state\":" + Json.Str(client.State.ToString()) + "}}");
        return 0;
    }

    static void Emit(string line)
    {
        lock (Out)
        {
            Console.Out.WriteLine(line);
            Console.Out.Flush();
        }
    }

    static byte[] ReadExactly(Stream input, int count)
    {
        var buffer = new byte[count];
        for (int read = 0; read < count;)
        {
            int n = input.Read(buffer, read, count - read);
            if (n == 0) return null;
            read += n;
        }
        return buffer;
    }
}

static class Json
{
    public static string Message(RigStreamMessage message)
    {
        return message.Frame != null ? "{\"frame\":" + Frame(message.Frame) + "}" : "{\"controls\":" + Controls(message.Controls) + "}";
    }

    public static string Frame(RigFrame f)
    {
        return "{\"avatar_id\":" + Str(f.AvatarId) + ",\"session_id\":" + Str(f.SessionId) + ",\"actor_id\":" + Str(f.ActorId)
            + ",\"sequence\":" + f.Sequence + ",\"capture_time_us\":" + f.CaptureTimeUs + ",\"emit_time_us\":" + f.EmitTimeUs
            + ",\"values\":[" + string.Join(",", f.Values.Select(Bits)) + "]"
            + ",\"face_present\":" + (f.FacePresent ? "true" : "false") + ",\"confidence\":" + Bits(f.Confidence)
            + ",\"head_pose\":[" + Bits(f.HeadPose.Yaw) + "," + Bits(f.HeadPose.Pitch) + "," + Bits(f.HeadPose.Roll) + "]}";
    }

    static string Controls(AvatarControls c)
    {
        return "{\"avatar_id\":" + Str(c.AvatarId) + ",\"avatar_name\":" + Str(c.AvatarName)
            + ",\"control_names\":[" + string.Join(",", c.ControlNames.Select(Str)) + "]"
            + ",\"arkit_aliases\":[" + string.Join(",", c.ArkitAliases.Select(Str)) + "]}";
    }

    static string Bits(float value)
    {
        return BitConverter.ToInt32(BitConverter.GetBytes(value), 0).ToString();
    }

    /// <summary>A JSON string, ASCII only (whatever the console's encoding).</summary>
    public static string Str(string s)
    {
        if (s == null) return "null";
        var json = new StringBuilder("\"");
        foreach (char c in s)
        {
            if (c == '"' || c == '\\') json.Append('\\').Append(c);
            else if (c < 0x20 || c > 0x7E) json.Append("\\u").Append(((int)c).ToString("x4"));
            else json.Append(c);
        }
        return json.Append('"').ToString();
    }
}

/// <summary>The core's own tests: plain checks, one line per failure.</summary>
static class SelfTest
{
    static int failures, checks;

    static void Check(bool condition, string what)
    {
        checks++;
        if (condition) return;
        failures++;
        Console.WriteLine("FAIL " + what);
    }

    static void Near(double actual, double expected, string what, double tolerance = 1e-5)
    {
        Check(Math.Abs(actual - expected) <= tolerance, what + ": " + actual + " != " + expected);
    }

    public static int Run()
    {
        var tests = new Dictionary<string, Action>
        {
            { "wire", Wire },
            { "jitter buffer", Jitter },
            { "latest frames", Latest },
            { "reconnect policy", Policy },
            { "blendshape map", Map },
            { "client", ClientLoop },
        };
        foreach (var test in tests)
        {
            try { test.Value(); }
            catch (Exception error) { failures++; Console.WriteLine("FAIL " + test.Key + ": " + error); }
        }
        Console.WriteLine((failures == 0 ? "ok " : "failed ") + checks + " checks, " + failures + " failures");
        return failures == 0 ? 0 : 1;
    }

    static RigFrame FrameAt(double captureSeconds, params float[] values)
    {
        return new RigFrame { AvatarId = "a", CaptureTimeUs = (long)Math.Round(captureSeconds * 1e6), Values = values };
    }

    static void Wire()
    {
        var request = RigWire.Encode(new SubscribeRequest { SessionId = "s", AvatarIds = new[] { "a", "" } });
        // session_id "s", no token (proto3 leaves defaults out), avatar_ids "a" and "" (repeated: kept)
        Check(request.SequenceEqual(new byte[] { 0x0A, 1, (byte)'s', 0x1A, 1, (byte)'a', 0x1A, 0 }), "SubscribeRequest bytes");
        foreach (var broken in new[] { new byte[] { 0x12 }, new byte[] { 0x12, 5, 0x0A }, new byte[0], new byte[] { 0x13 }, new byte[] { 0x12, 0x80 } })
        {
            bool refused = false;
            try { RigWire.ParseRigStreamMessage(broken); }
            catch (RigWireException) { refused = true; }
            Check(refused, "refuses " + BitConverter.ToString(broken));
        }
    }

    static void Jitter()
    {
        var buffer = new JitterBuffer(0.05);
        var sample = new RigSample();
        Check(!buffer.Sample(1, sample), "empty: nothing to show");
        // Frames captured every 1/30 s arrive 0.1 s later, give or take 20 ms.
        double[] late = { 0.100, 0.120, 0.101, 0.115, 0.100 };
        for (int i = 0; i < late.Length; i++) buffer.Add(FrameAt(10 + i / 30.0, i), 10 + i / 30.0 + late[i]);
        Near(buffer.ClockGap, 0.100, "clock gap: the least-delayed frames");
        // At local time t the buffer shows capture time t - 0.1 - 0.05.
        buffer.Sample(10.15 + 1.5 / 30, sample);
        Near(sample.Values[0], 1.5, "halfway between frames 1 and 2");
        buffer.Sample(10.15 + 2.25 / 30, sample);
        Near(sample.Values[0], 2.25, "a quarter past frame 2");
        buffer.Sample(20, sample);
        Near(sample.Values[0], 4, "past the newest: held");
        // A frame that comes late slots in by its capture time.
        var slotted = new JitterBuffer(0);
        slotted.Add(FrameAt(0, 0), 0);
        slotted.Add(FrameAt(2 / 30.0, 2), 2 / 30.0);
        slotted.Add(FrameAt(1 / 30.0, 10), 2.5 / 30.0);
        slotted.Sample(1 / 30.0, sample);
        Near(sample.Values[0], 10, "a late frame in its place", 1e-3);
        Check(slotted.Count == 2, "frames before the shown pair are dropped");
        // The sender's clock restarts: the buffer starts over rather than wait an hour.
        var restarted = new JitterBuffer(0);
        restarted.Add(FrameAt(3600, 1), 0);
        restarted.Add(FrameAt(5, 7), 0.1);
        Check(restarted.Count == 1, "clock jump clears");
        restarted.Sample(0.1, sample);
        Near(sample.Values[0], 7, "clock jump: the new frames play");
        // Head pose and confidence interpolate; face presence comes from the nearer frame.
        var posed = new JitterBuffer(0);
        var a = FrameAt(0, 0); a.HeadPose.Yaw = 10; a.Confidence = 0.2f; a.FacePresent = true;
        var b = FrameAt(1, 1); b.HeadPose.Yaw = 20; b.Confidence = 0.4f; b.FacePresent = false;
        posed.Add(a, 0);
        posed.Add(b, 1);
        posed.Sample(0.25, sample);
        Near(sample.HeadPose.Yaw, 12.5, "yaw");
        Near(sample.Confidence, 0.25, "confidence");
        Check(sample.FacePresent, "face from the nearer frame");
        // A rig of another size (the avatar was re-registered) starts over.
        posed.Add(FrameAt(2, 1, 2, 3), 2);
        Check(posed.Count == 1, "new rig clears");
    }

    static void Latest()
    {
        var latest = new LatestFrames();
        var named = new AvatarControls { AvatarId = "a", AvatarName = "robot" };
        latest.Offer(new RigStreamMessage { Controls = named }, 0);
        for (int i = 1; i <= 3; i++) latest.Offer(new RigStreamMessage { Frame = new RigFrame { AvatarId = "a", Sequence = (ulong)i } }, i);
        latest.Offer(new RigStreamMessage { Frame = new RigFrame { AvatarId = "b", Sequence = 9 } }, 4);
        var taken = new List<ReceivedFrame>();
        Check(latest.TakeAll(taken) == 2, "one frame per avatar");
        var a = taken.Single(f => f.Frame.AvatarId == "a");
        Check(a.Frame.Sequence == 3 && a.ReceivedAt == 3, "the newest of a");
        Check(a.Controls == named && taken.Single(f => f.Frame.AvatarId == "b").Controls == null, "controls travel along");
        Check(latest.Received == 4 && latest.Replaced == 2, "counts");
        taken.Clear();
        Check(latest.TakeAll(taken) == 0, "taken means gone");
    }

    static void Policy()
    {
        var policy = new ReconnectPolicy { Jitter = 0 };
        var delays = Enumerable.Range(0, 8).Select(_ => policy.NextDelay().TotalSeconds).ToArray();
        Check(delays.SequenceEqual(new[] { 0.25, 0.5, 1, 2, 4, 8, 10, 10 }), "doubling to the cap: " + string.Join(",", delays));
        policy.Reset();
        Near(policy.NextDelay().TotalSeconds, 0.25, "reset");
        var jittered = new ReconnectPolicy(new Random(1));
        var spread = Enumerable.Range(0, 200).Select(_ => { jittered.Reset(); return jittered.NextDelay().TotalSeconds; }).ToArray();
        Check(spread.Min() >= 0.2 && spread.Max() <= 0.3 && spread.Max() - spread.Min() > 0.05, "jitter within 20%");
    }

    static void Map()
    {
        var controls = new AvatarControls
        {
            ControlNames = new[] { "blink_L", "jaw", "mouth_O", "tail" },
            ArkitAliases = new[] { "eyeBlinkLeft", "jawOpen", "", "" },
        };
        var shapes = new List<string> { "Face.eyeBlink_L", "blendShape1.JawOpen", "mouth_o", "Tail", "ears" };
        var rows = BlendshapeMap.AutoFill(new List<BlendshapeBinding>(), controls, shapes);
        var pairs = rows.Select(r => r.control + ">" + r.blendshape).ToArray();
        Check(pairs.SequenceEqual(new[] { "blink_L>Face.eyeBlink_L", "jaw>blendShape1.JawOpen", "mouth_O>mouth_o", "tail>Tail" }),
            "auto-fill by alias and by name: " + string.Join(" ", pairs));
        Check(BlendshapeMap.AutoFill(rows, controls, shapes).Count == 0, "auto-fill leaves filled shapes alone");
        // Before the stream names its controls: rows keyed by ARKit name, which aliases match.
        var early = BlendshapeMap.AutoFill(new List<BlendshapeBinding>(), null, shapes);
        Check(early.Select(r => r.control).SequenceEqual(new[] { "eyeBlinkLeft", "jawOpen" }), "ARKit rows from the mesh alone");
        var table = new List<BlendshapeBinding>(early) { new BlendshapeBinding("tail", "Tail") { scale = 50, offset = 50 }, new BlendshapeBinding("fins", "Tail") };
        var map = new BlendshapeMap(table, controls, shapes);
        Check(map.Controls.SequenceEqual(new[] { 0, 1, 3 }) && map.Blendshapes.SequenceEqual(new[] { 0, 1, 3 }), "resolved indices");
        Check(map.Unmatched.SequenceEqual(new[] { "no control 'fins'" }), "unmatched rows named");
        var weights = new float[map.Count];
        map.Weights(new[] { 0.5f, 1f, 0.3f, -1f }, weights);
        Check(weights.SequenceEqual(new[] { 50f, 100f, 0f }), "weights: " + string.Join(",", weights));
    }

    /// <summary>An in-memory transport scripted call by call.</summary>
    sealed class ScriptedTransport : IRigTransport
    {
        public readonly List<byte[]> Requests = new List<byte[]>();
        readonly Queue<Func<IRigCall>> calls;

        public ScriptedTransport(params Func<IRigCall>[] calls)
        {
            this.calls = new Queue<Func<IRigCall>>(calls);
        }

        public IRigCall Subscribe(byte[] request, CancellationToken cancel)
        {
            lock (Requests) Requests.Add(request);
            return calls.Count > 0 ? calls.Dequeue()() : new ScriptedCall(null, new IOException("no more calls"), hang: true);
        }

        public void Dispose() { }
    }

    sealed class ScriptedCall : IRigCall
    {
        readonly Queue<byte[]> messages;
        readonly Exception end;
        readonly bool hang;

        public ScriptedCall(byte[][] messages, Exception end, bool hang = false)
        {
            this.messages = new Queue<byte[]>(messages ?? new byte[0][]);
            this.end = end;
            this.hang = hang;
        }

        public Task WaitAcceptedAsync(CancellationToken cancel)
        {
            if (end is RigCallException && messages.Count == 0) throw end;
            return Task.FromResult(0);
        }

        public async Task<byte[]> ReadAsync(CancellationToken cancel)
        {
            if (messages.Count > 0) return messages.Dequeue();
            if (hang) await Task.Delay(Timeout.Infinite, cancel);
            if (end != null) throw end;
            return null;
        }

        public void Dispose() { }
    }

    static byte[] FrameBytes(ulong sequence)
    {
        // RigStreamMessage{frame: RigFrame{avatar_id: "a", sequence: N}}
        return new byte[] { 0x12, 5, 0x0A, 1, (byte)'a', 0x20, (byte)sequence };
    }

    static void ClientLoop()
    {
        var transport = new ScriptedTransport(
            () => new ScriptedCall(new[] { FrameBytes(1), FrameBytes(2) }, new IOException("connection reset")),
            () => new ScriptedCall(new[] { FrameBytes(3) }, null),  // the server ends the stream
            () => new ScriptedCall(null, new RigCallException(StatusCodes.NotFound, "no session with id 's'")));
        var policy = new ReconnectPolicy { InitialDelaySeconds = 0.01, Jitter = 0 };
        var client = new RigStreamClient(transport, new SubscribeRequest { SessionId = "s", SessionToken = "t" }, policy);
        var states = new List<string>();
        client.StateChanged += (state, error) => { lock (states) states.Add(state + (state == ConnectionState.Waiting || state == ConnectionState.Failed ? ": " + error : "")); };
        client.Start();
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (client.State != ConnectionState.Failed && DateTime.UtcNow < deadline) Thread.Sleep(5);
        client.Stop(TimeSpan.FromSeconds(1));
        string[] expected =
        {
            "Connecting", "Streaming", "Waiting: connection reset",
            "Connecting", "Streaming", "Waiting: the server ended the stream",
            "Connecting", "Failed: NOT_FOUND: no session with id 's'",
        };
        Check(states.SequenceEqual(expected), "states: " + string.Join(" | ", states));
        Check(transport.Requests.Count == 3 && transport.Requests.All(r => r.SequenceEqual(transport.Requests[0])), "resubscribes with the same request");
        Check(client.AcceptedCalls == 2 && client.MessagesReceived == 3, "accepted " + client.AcceptedCalls + ", messages " + client.MessagesReceived);
        Check(policy.Failures == 1, "an accepted call starts the backoff over: " + policy.Failures + " failures");
        var taken = new List<ReceivedFrame>();
        client.Frames.TakeAll(taken);
        Check(taken.Count == 1 && taken[0].Frame.Sequence == 3, "the newest frame waits for the main thread");

        // Stop while a read is pending: the call is cancelled and the loop ends promptly.
        var idle = new RigStreamClient(new ScriptedTransport(() => new ScriptedCall(null, null, hang: true)), new SubscribeRequest { SessionId = "s" });
        idle.Start();
        while (idle.State != ConnectionState.Streaming) Thread.Sleep(1);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        idle.Stop(TimeSpan.FromSeconds(1));
        Check(idle.State == ConnectionState.Stopped && watch.ElapsedMilliseconds < 500, "stops in " + watch.ElapsedMilliseconds + " ms");
    }
}
