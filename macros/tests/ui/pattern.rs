#[cachelet_macros::read("get_org_user")]
async fn get_org_user((org_id, user_id): (u64, u64)) -> Result<u64, String> {
    Ok(org_id + user_id)
}

fn main() {}
