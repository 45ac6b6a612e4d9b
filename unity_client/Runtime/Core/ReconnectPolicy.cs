// How long to wait before reconnecting: exponential backoff with jitter.
using System;
using System.Diagnostics;

namespace FreeAvatar
{
    public sealed class ReconnectPolicy
    {
        public double InitialDelaySeconds = 0.25;
        public double MaxDelaySeconds = 10;
        public double Multiplier = 2;
        /// <summary>Each delay is moved by up to this share either way, so that many clients
        /// dropped at once by a server restart do not all come back in the same instant.</summary>
        public double Jitter = 0.2;

        readonly Random random;
        int failures;

        public ReconnectPolicy(Random random = null)
        {
            this.random = random ?? new Random();
        }

        /// <summary>Failed attempts since the last call that the server accepted.</summary>
        public int Failures { get { return failures; } }

        /// <summary>The wait before the next attempt; each call counts one more failure.</summary>
        public TimeSpan NextDelay()
        {
            double delay = Math.Min(MaxDelaySeconds, InitialDelaySeconds * Math.Pow(Multiplier, failures));
            failures++;
            delay *= 1 + Jitter * (2 * random.NextDouble() - 1);
            return TimeSpan.FromSeconds(delay);
        }

        /// <summary>A call was accepted: the next failure starts again from the initial delay.</summary>
        public void Reset()
        {
            failures = 0;
        }
    }

    /// <summary>Seconds on one monotonic clock that the receiving and the main thread share
    /// (engine clocks such as Unity's Time are not safe to read off the main thread).</summary>
    public static class MonotonicClock
    {
        static readonly Stopwatch Watch = Stopwatch.StartNew();

        public static double Now { get { return Watch.Elapsed.TotalSeconds; } }
    }
}
