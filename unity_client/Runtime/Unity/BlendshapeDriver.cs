// Drives a SkinnedMeshRenderer's blend shapes from one avatar's rig frames.
using System.Collections.Generic;
using UnityEngine;

namespace FreeAvatar
{
    [AddComponentMenu("FreeAvatar/Blendshape Driver")]
    public sealed class BlendshapeDriver : MonoBehaviour
    {
        [Tooltip("The connection whose frames drive this mesh.")]
        public FreeAvatarConnection connection;

        [Tooltip("The avatar, by id or by name, as registered on the server.")]
        public string avatar = "";

        [Tooltip("The mesh whose blend shapes the avatar's controls drive.")]
        public SkinnedMeshRenderer target;

        [Tooltip("Seconds the pose plays behind the newest frame: room to interpolate over network jitter.")]
        [Range(0f, 0.3f)]
        public float delay = 0.05f;

        [Tooltip("When the avatar's controls arrive, add rows for blend shapes named like a control or its ARKit alias.")]
        public bool autoFill = true;

        [Tooltip("Control (name or ARKit alias) -> blend shape; weight = value * scale + offset.")]
        public List<BlendshapeBinding> bindings = new List<BlendshapeBinding>();

        readonly RigSample sample = new RigSample();
        bool started;
        JitterBuffer buffer;
        BlendshapeMap map;
        AvatarControls mappedFor;
        float[] weights = new float[0];

        /// <summary>Whether the newest pose shown had a face in view.</summary>
        public bool FacePresent { get { return sample.FacePresent; } }

        /// <summary>Rows of the table that matched nothing, once the avatar's controls are known.</summary>
        public IList<string> Unmatched { get { return map != null ? (IList<string>)map.Unmatched : new string[0]; } }

        [ContextMenu("Fill from blend shape names")]
        public void FillFromBlendShapeNames()
        {
            if (target == null) target = GetComponent<SkinnedMeshRenderer>();
            bindings.AddRange(BlendshapeMap.AutoFill(bindings, mappedFor, BlendShapeNames()));
        }

        // Unity calls Reset when the component is added in the editor: a table to start from.
        void Reset()
        {
            target = GetComponent<SkinnedMeshRenderer>();
            connection = FindObjectOfType<FreeAvatarConnection>();
            if (target != null) FillFromBlendShapeNames();
        }

        // Attaching in Start, not OnEnable, lets a script that adds this component set its fields
        // first (AddComponent runs OnEnable at once).
        void Start()
        {
            started = true;
            Attach();
        }

        void OnEnable()
        {
            if (started) Attach();
        }

        void Attach()
        {
            if (target == null) target = GetComponent<SkinnedMeshRenderer>();
            buffer = new JitterBuffer(delay);
            mappedFor = null;
            map = null;
            if (connection != null) connection.Register(this);
            else Debug.LogWarning("BlendshapeDriver: no FreeAvatarConnection to take frames from", this);
        }

        void OnDisable()
        {
            if (connection != null) connection.Unregister(this);
        }

        internal bool Wants(ReceivedFrame frame)
        {
            return avatar == frame.Frame.AvatarId || (frame.Controls != null && avatar == frame.Controls.AvatarName);
        }

        internal void Receive(ReceivedFrame frame)
        {
            if (frame.Controls != mappedFor) Remap(frame.Controls);
            buffer.Add(frame.Frame, frame.ReceivedAt);
        }

        void LateUpdate()
        {
            if (map == null || target == null) return;
            buffer.Delay = delay;
            if (!buffer.Sample(MonotonicClock.Now, sample)) return;
            map.Weights(sample.Values, weights);
            for (int i = 0; i < map.Count; i++) target.SetBlendShapeWeight(map.Blendshapes[i], weights[i]);
        }

        void Remap(AvatarControls controls)
        {
            var names = BlendShapeNames();
            if (autoFill && controls != null) bindings.AddRange(BlendshapeMap.AutoFill(bindings, controls, names));
            map = new BlendshapeMap(bindings, controls, names);
            weights = new float[map.Count];
            mappedFor = controls;
            foreach (var problem in map.Unmatched) Debug.LogWarning("BlendshapeDriver '" + avatar + "': " + problem, this);
        }

        List<string> BlendShapeNames()
        {
            var names = new List<string>();
            var mesh = target != null ? target.sharedMesh : null;
            if (mesh == null) return names;
            for (int i = 0; i < mesh.blendShapeCount; i++) names.Add(mesh.GetBlendShapeName(i));
            return names;
        }
    }
}
