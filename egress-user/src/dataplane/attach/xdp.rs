//! The uplink's XDP program (`node_xdp`), held by an XDP link pinned in the node's pin
//! directory: the link, and with it the program, stays attached while the pin does, across
//! the agent's restarts; a new agent replaces the program in the link in place.

use std::path::Path;

use aya::programs::{
    Xdp, XdpMode,
    links::{FdLink, LinkError, PinnedLink},
    xdp::XdpLink,
};

use crate::dataplane::error::Error;

/// The pin of the uplink's XDP link in the node's pin directory.
const XDP_LINK_PIN: &str = "link_node_xdp";

/// Attaches `prog` (named `name`) to interface `iface` (index `index`) with an XDP link
/// pinned in `pin_dir` (replaced in place when a pin of an earlier run is there; without
/// `pin_dir`, it lives as long as the program's data plane). In the driver when it
/// supports XDP, else in the generic mode.
pub(super) fn attach(
    prog: &mut Xdp,
    name: &'static str,
    iface: &str,
    index: u32,
    pin_dir: Option<&Path>,
) -> Result<(), Error> {
    let program = |source| Error::Program { name, source };
    let link_error = |e: LinkError| Error::Attach {
        name,
        iface: iface.to_owned(),
        source: std::io::Error::other(e),
    };
    let pin = pin_dir.map(|dir| dir.join(XDP_LINK_PIN));
    let earlier = pin
        .as_ref()
        .and_then(|path| PinnedLink::from_pin(path).ok())
        .map(|pinned| XdpLink::try_from(FdLink::from(pinned)))
        .transpose()
        .map_err(link_error)?;
    let id = match earlier {
        Some(link) => prog.attach_to_link(link).map_err(program)?,
        None => match prog.attach_to_if_index(index, XdpMode::Driver) {
            Ok(id) => id,
            Err(_) => prog
                .attach_to_if_index(index, XdpMode::Skb)
                .map_err(program)?,
        },
    };
    let Some(path) = pin else {
        return Ok(());
    };
    if path.exists() {
        // The pin names the link that was updated: nothing more to keep.
        return Ok(());
    }
    let link = prog.take_link(id).map_err(program)?;
    let link = FdLink::try_from(link).map_err(link_error)?;
    link.pin(&path).map_err(|source| Error::Pin {
        name,
        path: path.clone(),
        source,
    })?;
    Ok(())
}
