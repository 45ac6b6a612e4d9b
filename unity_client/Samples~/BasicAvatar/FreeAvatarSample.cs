// The smallest scene: one avatar's rig stream on one mesh, and the connection's state on screen.
// Put it on any GameObject, drag the face's SkinnedMeshRenderer into `face`, fill in the session
// and the avatar, press Play.
using FreeAvatar;
using UnityEngine;

public sealed class FreeAvatarSample : MonoBehaviour
{
    public string serverAddress = "http://127.0.0.1:50051";
    public string sessionId = "";
    public string sessionToken = "";
    [Tooltip("The avatar's id or name, e.g. human_arkit for `freeavatar serve --builtin-avatars`.")]
    public string avatar = "human_arkit";
    public SkinnedMeshRenderer face;

    FreeAvatarConnection connection;
    BlendshapeDriver driver;

    void Awake()
    {
        // Both components connect in their Start, after these fields are set.
        connection = gameObject.AddComponent<FreeAvatarConnection>();
        connection.serverAddress = serverAddress;
        connection.sessionId = sessionId;
        connection.sessionToken = sessionToken;

        driver = face.gameObject.AddComponent<BlendshapeDriver>();
        driver.connection = connection;
        driver.avatar = avatar;
        driver.target = face;
    }

    void OnGUI()
    {
        string state = connection.State + (connection.LastError.Length > 0 ? " (" + connection.LastError + ")" : "");
        GUI.Label(new Rect(12, 12, 900, 22), "FreeAvatar: " + state);
        GUI.Label(new Rect(12, 34, 900, 22), string.Format(
            "{0}: {1} frames received, face {2}, {3} blend shapes unmatched",
            avatar, connection.FramesReceived, driver.FacePresent ? "found" : "not found", driver.Unmatched.Count));
    }
}
