#[cachelet_macros::write("update_user")]
async fn update_user(user_id: u64) {
    let _ = user_id;
}

fn main() {}
